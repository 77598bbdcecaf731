//! Client keys of the locally stored types and `consistent_hash` (README "Locally stored
//! types"): which request value names a client, read through the [`Host`]. The parsing is
//! pure and total: any input gives a key or `None`, never a panic.
//!
//! - [`ClientKey`]: what a table kind reads from a request (and, for `app_cookie`, learns
//!   from a response); one implementation per kind: [`app_cookie`], [`header`],
//!   [`client_ip`], [`tls`], [`custom`].
//! - [`source`]: the value a `custom.source` / `hash.source` names.
//! - [`url`]: `;name=value` path parameters, query parameters, the path without its query.
//! - [`response_cookie`]: the value a response's `Set-Cookie` gives an application cookie.
//! - [`header_safe`]: a key as a request header value.

pub mod app_cookie;
pub mod client_ip;
pub mod custom;
pub mod header;
pub mod response_cookie;
pub mod tls;
pub mod url;

pub use custom::source;

use crate::cookie::header as cookie_header;
use crate::host::Host;
use std::net::SocketAddr;

/// The longest key used; a longer value gives no key (no persistence: `miss`).
pub const MAX_KEY: usize = 8 * 1024;

/// What a locally stored kind reads from a request to name its client.
///
/// `Send`: the native module keeps a compiled profile on Envoy's main thread for its mirror
/// (README "Native module").
pub trait ClientKey: std::fmt::Debug + Send {
    /// The request's key, or `None` (no persistence: counted `miss`).
    fn read(&self, host: &dyn Host) -> Option<Vec<u8>>;

    /// A server configured for this key, which always wins over the table.
    fn fixed_server(&self, _key: &[u8]) -> Option<SocketAddr> {
        None
    }

    /// Keys the response itself hands out (a server's own session cookie), each bound to
    /// the server that answered.
    fn taught_by_response(&self, _host: &dyn Host) -> Vec<Vec<u8>> {
        Vec::new()
    }

    /// Whether a request key the table does not know is bound to the server that answered.
    fn binds_unknown_keys(&self) -> bool {
        true
    }
}

pub(crate) fn non_empty(v: Vec<u8>) -> Option<Vec<u8>> {
    (!v.is_empty() && v.len() <= MAX_KEY).then_some(v)
}

/// The first non-empty value of request cookie `name`.
pub(crate) fn cookie_value(host: &dyn Host, name: &str) -> Option<Vec<u8>> {
    let h = host.request_header("cookie")?;
    let value = cookie_header::values(&h, name.as_bytes())
        .find(|v| !v.is_empty())
        .map(<[u8]>::to_vec);
    value
}

/// The request's `:path`.
pub(crate) fn path(host: &dyn Host) -> Option<Vec<u8>> {
    host.request_header(":path")
}

/// A header-safe form of a key (`consistent_hash` writes it into a request header): the
/// value itself when it is printable ASCII, otherwise the hex MD5 of its bytes.
pub fn header_safe(key: &[u8]) -> Vec<u8> {
    if key.len() <= 1024 && key.iter().all(|c| (0x20..0x7f).contains(c)) {
        return key.to_vec();
    }
    format!("{:x}", md5::compute(key)).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::header_safe;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn printable_keys_pass_others_are_hashed() {
        assert_eq!(header_safe(b"alice"), b"alice");
        assert_eq!(header_safe(b"a\nb").len(), 32);
        assert_eq!(header_safe(&[0xff]), header_safe(&[0xff]));
        assert_ne!(header_safe(&[0xff]), header_safe(&[0xfe]));
    }
}
