"""TLS helpers for the `tls` persistence tests: a throw-away PKI and an HTTPS/1.1 client
that can resume a TLS session on a fresh TCP connection.

    python tests/e2e/tls_util.py --out envoy/certs      # (re)generate the demo certificates

The PKI: one CA, a server certificate for `persist.test` / 127.0.0.1 / localhost, and
client certificates (for the `peer_certificate` key with mTLS). Everything is generated with
`cryptography`, ECDSA P-256, valid from an hour ago; nothing here is a secret worth keeping.
"""

import argparse
import datetime
import http.client
import ipaddress
import socket
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL = "127.0.0.1"
SERVER_NAME = "persist.test"
SESSION_HEADER = "x-tls-session-id"


# --- PKI ---------------------------------------------------------------------------------------

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "envoy-persist demo (NOT FOR PRODUCTION)"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(subject, issuer, pub, days):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days)))


@dataclass
class Pki:
    """Files of a generated PKI: ca, server and client certificates (PEM)."""
    dir: Path
    ca_cert: Path = None
    server_cert: Path = None
    server_key: Path = None
    clients: dict = field(default_factory=dict)  # name -> (cert path, key path)


def make_pki(out: Path, clients=("client-1", "client-2"), days=2) -> Pki:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pki = Pki(out)
    ca_key = _key()
    ca_name = _name("envoy-persist demo CA")
    ca = (_builder(ca_name, ca_name, ca_key.public_key(), days)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    pki.ca_cert = out / "ca.crt"
    pki.ca_cert.write_bytes(_pem_cert(ca))

    def leaf(cn, usage, sans):
        key = _key()
        b = (_builder(_name(cn), ca_name, key.public_key(), days)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, b.sign(ca_key, hashes.SHA256())

    key, cert = leaf(SERVER_NAME, ExtendedKeyUsageOID.SERVER_AUTH,
                     [x509.DNSName(SERVER_NAME), x509.DNSName("localhost"),
                      x509.IPAddress(ipaddress.ip_address(LOCAL))])
    pki.server_cert, pki.server_key = out / "server.crt", out / "server.key"
    pki.server_cert.write_bytes(_pem_cert(cert))
    pki.server_key.write_bytes(_pem_key(key))
    pki.server_key.chmod(0o600)
    for name in clients:
        key, cert = leaf(name, ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName(f"{name}.{SERVER_NAME}")])
        c, k = out / f"{name}.crt", out / f"{name}.key"
        c.write_bytes(_pem_cert(cert))
        k.write_bytes(_pem_key(key))
        k.chmod(0o600)
        pki.clients[name] = (c, k)
    return pki


def cert_sha256(path) -> str:
    """Lower-case hex SHA-256 of a PEM certificate's DER (what Envoy's
    connection.sha256_peer_certificate_digest is)."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()


# --- Envoy configuration patches ----------------------------------------------------------------

def downstream_tls_context(cfg):
    listener = cfg["static_resources"]["listeners"][0]
    chain = listener["filter_chains"][0]
    ts = chain.get("transport_socket")
    assert ts and ts["name"] == "envoy.transport_sockets.tls", "listener has no TLS transport socket"
    return ts["typed_config"]


def patch_certs(pki: Pki, mtls=False, max_version=None):
    """A patch for conftest.Envoy: the example's certificate files replaced with `pki`'s;
    with `mtls`, client certificates are verified against the PKI's CA and required
    (mtls="optional": requested and verified, not required)."""
    def patch(cfg):
        ctx = downstream_tls_context(cfg)
        common = ctx["common_tls_context"]
        common["tls_certificates"] = [{"certificate_chain": {"filename": str(pki.server_cert)},
                                       "private_key": {"filename": str(pki.server_key)}}]
        if max_version:
            common.setdefault("tls_params", {})["tls_maximum_protocol_version"] = max_version
        if mtls:
            ctx["require_client_certificate"] = mtls != "optional"
            common["validation_context"] = {"trusted_ca": {"filename": str(pki.ca_cert)}}
    return patch


# --- client ---------------------------------------------------------------------------------------

def client_context(pki: Pki, client=None, tls12=True) -> ssl.SSLContext:
    """A verifying client context trusting the PKI's CA; TLS 1.2 only unless tls12=False;
    with `client`, that client certificate is presented."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki.ca_cert))
    ctx.check_hostname = True
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if client is not None:
        cert, key = pki.clients[client]
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


class TlsResult:
    """A response plus what the TLS layer of its connection did."""

    def __init__(self, response, session, reused, version, session_id):
        self.response = response
        self.session = session          # ssl.SSLSession to resume with
        self.reused = reused            # this connection resumed the offered session
        self.version = version          # "TLSv1.2" ...
        self.session_id = session_id    # hex of the session ID as the client sees it

    def __getattr__(self, name):        # r.status, r.server, r.echoed ... of the response
        return getattr(self.response, name)

    def __repr__(self):
        return f"TlsResult({self.response!r}, reused={self.reused}, {self.version}, id={self.session_id})"


class _Conn(http.client.HTTPConnection):
    def __init__(self, port, ctx, session, timeout):
        super().__init__(LOCAL, port, timeout=timeout)
        self._ctx = ctx
        self._offer = session
        self.tls_session = None
        self.tls_reused = None
        self.tls_version = None

    def connect(self):
        raw = socket.create_connection((self.host, self.port), self.timeout)
        try:
            self.sock = self._ctx.wrap_socket(raw, server_hostname=SERVER_NAME, session=self._offer)
        except BaseException:
            raw.close()
            raise
        # TLS 1.2: the session (and its ID) is known as soon as the handshake is done.
        self.tls_session = self.sock.session
        self.tls_reused = self.sock.session_reused
        self.tls_version = self.sock.version()


def tls_request(port, ctx, session=None, path="/", headers=None, timeout=5.0) -> TlsResult:
    """One HTTPS/1.1 request on a fresh TCP connection (Connection: close), offering
    `session` for resumption."""
    from conftest import Response  # the plain-HTTP tests' response type
    hdrs = {"Connection": "close", "Host": SERVER_NAME}
    hdrs.update(headers or {})
    conn = _Conn(port, ctx, session, timeout)
    try:
        conn.request("GET", path, headers=hdrs)
        r = conn.getresponse()
        body = r.read()
        resp = Response(r.status, r.getheaders(), body)
        s = conn.tls_session
        sid = s.id.hex() if s is not None else None
        return TlsResult(resp, s, conn.tls_reused, conn.tls_version, sid)
    finally:
        conn.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory for ca.crt, server.{crt,key}, client-N.{crt,key}")
    p.add_argument("--days", type=int, default=3650)
    args = p.parse_args(argv)
    pki = make_pki(Path(args.out), days=args.days)
    print(f"demo PKI written to {pki.dir}: ca.crt server.crt server.key "
          + " ".join(f"{n}.crt {n}.key" for n in pki.clients), file=sys.stderr)


if __name__ == "__main__":
    main()
