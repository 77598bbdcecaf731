//! Key extraction for the locally stored types and `consistent_hash` (SPEC 2.2, 2.3): pure
//! functions over the bytes the filter reads from the host. Every one is total: any input
//! gives a key or `None`, never a panic.
//!
//! - [`url`]: `;name=value` path parameters, query parameters, the path without its query.
//! - [`client_ip`]: the client address, masked by prefix length.
//! - [`set_cookie`]: the value a response's `Set-Cookie` gives an application cookie.
//! - [`header_safe`]: a key as a request header value.

pub mod client_ip;
pub mod set_cookie;
pub mod url;

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
