//! `custom` (README "custom"): the value at `custom.source` — a header, a cookie, a query
//! parameter or a property another filter set. [`source`] also serves `consistent_hash`.

use super::{client_ip, cookie_value, non_empty, path, url, ClientKey};
use crate::config::Source;
use crate::host::Host;

#[derive(Debug)]
pub struct CustomKey(Source);

pub fn key(cfg: &Source) -> Box<dyn ClientKey> {
    Box::new(CustomKey(cfg.clone()))
}

impl ClientKey for CustomKey {
    fn read(&self, host: &dyn Host) -> Option<Vec<u8>> {
        source(host, &self.0)
    }
}

/// The value a `custom.source` / `hash.source` names.
pub fn source(host: &dyn Host, s: &Source) -> Option<Vec<u8>> {
    let v = match s {
        Source::Header(name) => host.request_header(name)?,
        Source::Cookie(name) => cookie_value(host, name)?,
        Source::Query(name) => url::query_parameter(&path(host)?, name)?.to_vec(),
        Source::Property(p) => {
            let segments: Vec<&str> = p.iter().map(String::as_str).collect();
            host.property(&segments)?
        }
        Source::ClientIp => client_ip::parse(&host.property(&["source", "address"])?)?
            .to_string()
            .into_bytes(),
        Source::Path => url::path_only(&path(host)?).to_vec(),
    };
    non_empty(v)
}
