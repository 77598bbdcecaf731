//! Reading each type's key from the request (SPEC 2.2, 2.3): only the one header or
//! property the configured type needs. The parsing itself is in `persist_core::keys`.

use crate::host;
use persist_core::config::{Kind, Source, TlsKey};
use persist_core::cookie::header;
use persist_core::keys::{client_ip, url};

/// The longest key used; a longer value is hashed like any other but read no further.
const MAX_KEY: usize = 8 * 1024;

fn non_empty(v: Vec<u8>) -> Option<Vec<u8>> {
    (!v.is_empty() && v.len() <= MAX_KEY).then_some(v)
}

fn cookie_value(name: &str) -> Option<Vec<u8>> {
    let h = host::request_header("cookie")?;
    let value = header::values(&h, name.as_bytes())
        .find(|v| !v.is_empty())
        .map(<[u8]>::to_vec);
    value
}

fn path() -> Option<Vec<u8>> {
    host::request_header(":path")
}

/// The value a `custom.source` / `hash.source` names.
pub fn source(s: &Source) -> Option<Vec<u8>> {
    let v = match s {
        Source::Header(name) => host::request_header(name)?,
        Source::Cookie(name) => cookie_value(name)?,
        Source::Query(name) => url::query_parameter(&path()?, name)?.to_vec(),
        Source::Property(p) => {
            let segments: Vec<&str> = p.iter().map(String::as_str).collect();
            host::property(&segments)?
        }
        Source::ClientIp => client_ip::parse(&host::property(&["source", "address"])?)?
            .to_string()
            .into_bytes(),
        Source::Path => url::path_only(&path()?).to_vec(),
    };
    non_empty(v)
}

/// The request's key for a locally stored type, or `None` (no persistence: `miss`).
pub fn request_key(kind: &Kind) -> Option<Vec<u8>> {
    match kind {
        Kind::AppCookie(c) => cookie_value(&c.name).or_else(|| {
            let p = path()?;
            url::path_parameter(&p, &c.name)
                .or_else(|| url::query_parameter(&p, c.query_parameter.as_deref()?))
                .map(<[u8]>::to_vec)
        }),
        Kind::HttpHeader(h) => host::request_header(&h.name).and_then(non_empty),
        Kind::ClientIp(c) => {
            let ip = client_ip::parse(&host::property(&["source", "address"])?)?;
            Some(client_ip::key(ip, c))
        }
        Kind::Tls(TlsKey::SessionId { header }) => host::request_header(header).and_then(non_empty),
        Kind::Tls(TlsKey::PeerCertificate) => {
            host::property(&["connection", "sha256_peer_certificate_digest"]).and_then(non_empty)
        }
        Kind::Custom(s) => source(s),
        Kind::HttpCookie(_) | Kind::ConsistentHash(_) => None,
    }
}
