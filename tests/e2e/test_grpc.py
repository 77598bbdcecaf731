"""gRPC through Envoy over HTTP/2 (h2c from the client, HTTP/2 to the servers): a real grpcio
client and three real grpcio servers. Cookie and session_header persistence stick across new
channels (each its own HTTP/2 connection); a server killed mid-session fails over as the
stateful_session hand-off documents (once health checking took it out, the next call on the
same channel goes elsewhere and carries new persistence); a cookie sent as several `cookie`
metadata entries (HTTP/2 cookie crumbs, RFC 9113 section 8.2.3) is found in any position.

The servicer is defined here with a generic handler (raw bytes, no protoc); this file is also
the server program: `python test_grpc.py --serve PORT NAME`.
"""

import json
import signal
import socket
import subprocess
import sys
import time

import grpc

METHOD = "/persist.Echo/Who"


def serve(port, name):
    """A gRPC server answering METHOD with its name and the request metadata it received."""
    from concurrent import futures

    def who(request, context):
        md = [[k, v if isinstance(v, str) else v.decode("latin-1")] for k, v in context.invocation_metadata()]
        return json.dumps({"server": name, "metadata": md}).encode()

    handler = grpc.method_handlers_generic_handler("persist.Echo", {
        "Who": grpc.unary_unary_rpc_method_handler(who, request_deserializer=None, response_serializer=None),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    serve(int(sys.argv[2]), sys.argv[3])
    sys.exit(0)

# --- the tests -------------------------------------------------------------------------------

import pytest  # noqa: E402

import persist_codec as codec  # noqa: E402
from conftest import (KEY1, LOCAL, Backends, Envoy, deadline_loop, free_port,  # noqa: E402
                      plugin_config)

HEADER = "x-persist-session"


class GrpcServer:
    def __init__(self, name, port, logdir):
        self.name, self.port, self.logdir = name, port, logdir
        self.addr = f"{LOCAL}:{port}"
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=15.0):
        log = open(self.logdir / f"grpc-{self.name}.log", "ab")
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(self.port), self.name],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        for _ in deadline_loop(timeout, 0.05):
            assert self.proc.poll() is None, f"grpc server {self.name} exited"
            try:
                with socket.create_connection((LOCAL, self.port), timeout=0.5):
                    return
            except OSError:
                pass
        raise AssertionError(f"grpc server {self.name} not listening within {timeout}s")

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def servers(tmp_path):
    pool = Backends(GrpcServer(n, free_port(), tmp_path) for n in ("a", "b", "c"))
    try:
        for s in pool:
            s.start()
        yield pool
    finally:
        for s in pool:
            s.kill()


def to_grpc(cfg):
    """The example's cluster speaks HTTP/2 to the servers (gRPC) and checks them over TCP."""
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] == "backends":
            c["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}}
            for hc in c["health_checks"]:
                hc.pop("http_health_check", None)
                hc["tcp_health_check"] = {}


@pytest.fixture
def grpc_envoy(servers, tmp_path):
    started = []

    def make(example, plugin):
        e = Envoy(example, plugin, servers, tmp_path, patch=to_grpc)
        started.append(e)
        return e.start()

    yield make
    for e in started:
        e.stop()


def new_channel(envoy):
    # A local subchannel pool: every channel is its own HTTP/2 connection to Envoy.
    return grpc.insecure_channel(f"{LOCAL}:{envoy.port}", options=[("grpc.use_local_subchannel_pool", 1)])


def call(channel, metadata=()):
    """One unary call: (answer dict, initial metadata dict of lists)."""
    rpc = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
    body, c = rpc.with_call(b"hi", metadata=list(metadata), timeout=5)
    initial = {}
    for k, v in c.initial_metadata():
        initial.setdefault(k, []).append(v)
    return json.loads(body), initial


def fresh_call(envoy, metadata=()):
    with new_channel(envoy) as ch:
        return call(ch, metadata)


def set_cookie_value(initial):
    vals = [v for v in initial.get("set-cookie", []) if v.startswith("persist=")]
    assert len(vals) <= 1, vals
    return vals[0].split(";")[0].split("=", 1)[1] if vals else None


def test_cookie_sticks_across_channels_crumbs_are_read_and_a_killed_server_fails_over(grpc_envoy, servers):
    envoy = grpc_envoy("http-cookie.yaml", plugin_config("stateful_session"))
    answer, initial = fresh_call(envoy)
    value = set_cookie_value(initial)
    assert value is not None, f"no cookie in the first call's metadata: {initial}"
    pinned = answer["server"]
    assert envoy.cookie_server(value).name == pinned
    for _ in range(8):
        answer, initial = fresh_call(envoy, [("cookie", f"persist={value}")])
        assert answer["server"] == pinned and set_cookie_value(initial) is None

    # Cookie crumbs: our cookie among others, each in its own `cookie` field, in any place.
    for pos in range(3):
        crumbs = [("cookie", "a=1"), ("cookie", "z=2; y=3")]
        crumbs.insert(pos, ("cookie", f"persist={value}"))
        answer, initial = fresh_call(envoy, crumbs)
        assert answer["server"] == pinned, (pos, answer)
        assert set_cookie_value(initial) is None
        seen = [v for k, v in answer["metadata"] if k == "cookie"]
        # What the server received: Envoy joins the crumbs into one field with "; ", in order.
        assert seen == ["; ".join(v for _, v in crumbs)], seen
    # A bad crumb before the good one: the first valid cookie wins.
    answer, _ = fresh_call(envoy, [("cookie", "persist=forged"), ("cookie", f"persist={value}")])
    assert answer["server"] == pinned
    envoy.wait_counters({"miss": 1, "new": 1, "hit": 8 + 3 + 1, "invalid": 0}, settle=0)

    # Mid-session: a channel in use, its server killed.
    ch = new_channel(envoy)
    try:
        assert call(ch, [("cookie", f"persist={value}")])[0]["server"] == pinned
        victim = servers.by_name(pinned)
        victim.kill()
        envoy.wait_health({victim.addr: False}, timeout=10)
        answer, initial = call(ch, [("cookie", f"persist={value}")])
        assert answer["server"] != pinned
        moved = set_cookie_value(initial)
        assert moved is not None and envoy.cookie_server(moved).name == answer["server"]
        for _ in range(4):
            a2, i2 = fresh_call(envoy, [("cookie", f"persist={moved}")])
            assert a2["server"] == answer["server"] and set_cookie_value(i2) is None
    finally:
        ch.close()
    # the call that failed over was named (hit), then rebound.
    envoy.wait_counters({"rebind": 1, "new": 2, "hit": 8 + 3 + 1 + 1 + 1 + 4}, settle=0)


def test_session_header_sticks_across_channels_and_fails_over(grpc_envoy, servers):
    plugin = {"name": "e2e", "type": "session_header",
              "session_header": {"name": HEADER, "keys": [codec.key_b64(KEY1)]}}
    envoy = grpc_envoy("session-header.yaml", plugin)
    answer, initial = fresh_call(envoy)
    token = initial.get(HEADER, [None])[0]
    assert token is not None, f"no token in the first call's metadata: {initial}"
    assert "set-cookie" not in initial
    pinned = answer["server"]
    assert servers.by_addr(codec.open_header_token([KEY1], HEADER, token).addr).name == pinned
    for _ in range(8):
        answer, initial = fresh_call(envoy, [(HEADER, token)])
        assert answer["server"] == pinned and HEADER not in initial
    ch = new_channel(envoy)
    try:
        assert call(ch, [(HEADER, token)])[0]["server"] == pinned
        victim = servers.by_name(pinned)
        victim.kill()
        envoy.wait_health({victim.addr: False}, timeout=10)
        answer, initial = call(ch, [(HEADER, token)])
        assert answer["server"] != pinned
        moved = initial.get(HEADER, [None])[0]
        assert moved is not None
        assert servers.by_addr(codec.open_header_token([KEY1], HEADER, moved).addr).name == answer["server"]
        for _ in range(4):
            a2, i2 = fresh_call(envoy, [(HEADER, moved)])
            assert a2["server"] == answer["server"] and HEADER not in i2
    finally:
        ch.close()
    envoy.wait_counters({"miss": 1, "new": 2, "rebind": 1, "hit": 8 + 1 + 1 + 4, "invalid": 0}, settle=0)
