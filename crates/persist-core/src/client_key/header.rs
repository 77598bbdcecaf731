//! `http_header`: a request header's value (README "http_header"); the static `servers`
//! map always wins over the table.

use super::{non_empty, ClientKey};
use crate::config::HeaderConfig;
use crate::host::Host;
use std::net::SocketAddr;

#[derive(Debug)]
pub struct HeaderKey(HeaderConfig);

pub fn key(cfg: &HeaderConfig) -> Box<dyn ClientKey> {
    Box::new(HeaderKey(cfg.clone()))
}

impl ClientKey for HeaderKey {
    fn read(&self, host: &dyn Host) -> Option<Vec<u8>> {
        host.request_header(&self.0.name).and_then(non_empty)
    }

    fn fixed_server(&self, key: &[u8]) -> Option<SocketAddr> {
        self.0.servers.get(key).copied()
    }
}
