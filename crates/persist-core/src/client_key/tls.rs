//! `tls` (README "tls"): the TLS session ID a native header_mutation filter copied into a
//! request header, or the SHA-256 digest of an mTLS client's certificate.

use super::{non_empty, ClientKey};
use crate::config::TlsKey;
use crate::host::Host;

#[derive(Debug)]
pub struct TlsClientKey(TlsKey);

pub fn key(cfg: &TlsKey) -> Box<dyn ClientKey> {
    Box::new(TlsClientKey(cfg.clone()))
}

impl ClientKey for TlsClientKey {
    fn read(&self, host: &dyn Host) -> Option<Vec<u8>> {
        match &self.0 {
            TlsKey::SessionId { header } => host.request_header(header).and_then(non_empty),
            TlsKey::PeerCertificate => host
                .property(&["connection", "sha256_peer_certificate_digest"])
                .and_then(non_empty),
        }
    }
}
