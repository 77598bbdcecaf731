//! Envoy's native `envoy.http.stateful_session.cookie` value.
//!
//! Envoy 1.40 writes standard base64 of a protobuf message
//! `message Cookie { string address = 1; uint64 expires = 2; }` (expires omitted when 0) and
//! quotes it in `Set-Cookie`; older releases wrote base64 of the plain `ip:port`. Both are
//! read; the protobuf form is written, with `expires` in unix seconds.
//!
//! Envoy itself fills `expires` from its monotonic clock (seconds since boot), which a
//! filter cannot read: values below [`WALL_CLOCK_FLOOR`] are therefore accepted unchecked.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use std::net::SocketAddr;

/// `expires` values below this (2001-09-09) are monotonic seconds, not unix time.
pub const WALL_CLOCK_FLOOR: u64 = 1_000_000_000;
/// Longest value we try to decode.
pub const MAX_ENCODED: usize = 160;

/// Encodes `addr` and `expires` (unix seconds, 0 = none) as Envoy 1.40 does.
pub fn encode(addr: SocketAddr, expires: u64) -> String {
    let address = addr.to_string();
    let mut msg = Vec::with_capacity(address.len() + 16);
    msg.push(0x0a); // field 1, length-delimited
    put_varint(&mut msg, address.len() as u64);
    msg.extend_from_slice(address.as_bytes());
    if expires != 0 {
        msg.push(0x10); // field 2, varint
        put_varint(&mut msg, expires);
    }
    STANDARD.encode(&msg)
}

/// Decodes either form; `None` if neither yields a valid `ip:port`.
pub fn decode(value: &[u8]) -> Option<(SocketAddr, Option<u64>)> {
    if value.len() > MAX_ENCODED {
        return None;
    }
    let mut raw = [0u8; MAX_ENCODED];
    let n = STANDARD
        .decode_slice(value, &mut raw)
        .or_else(|_| STANDARD_NO_PAD.decode_slice(value, &mut raw))
        .ok()?;
    let raw = raw.get(..n)?;
    if let Some((address, expires)) = parse_proto(raw) {
        if let Some(addr) = crate::addr::parse(address) {
            return Some((addr, (expires != 0).then_some(expires)));
        }
    }
    crate::addr::parse(raw).map(|a| (a, None))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Parses the `Cookie` message, skipping unknown fields as protobuf does.
fn parse_proto(mut buf: &[u8]) -> Option<(&[u8], u64)> {
    let mut address: Option<&[u8]> = None;
    let mut expires = 0u64;
    while !buf.is_empty() {
        let key = get_varint(&mut buf)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = get_varint(&mut buf)?;
                if field == 2 {
                    expires = v;
                }
            }
            1 => buf = buf.get(8..)?,
            2 => {
                let len = usize::try_from(get_varint(&mut buf)?).ok()?;
                let (bytes, rest) = buf.split_at_checked(len)?;
                if field == 1 {
                    address = Some(bytes);
                }
                buf = rest;
            }
            5 => buf = buf.get(4..)?,
            _ => return None,
        }
        if field == 0 {
            return None;
        }
    }
    address.map(|a| (a, expires))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn proto_round_trip() {
        let a: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let v = encode(a, 1_800_000_000);
        assert_eq!(decode(v.as_bytes()), Some((a, Some(1_800_000_000))));
        let v0 = encode(a, 0);
        assert_eq!(decode(v0.as_bytes()), Some((a, None)));
        // The exact bytes Envoy's protobuf serializer produces.
        assert_eq!(
            STANDARD.decode(&v0).unwrap(),
            b"\x0a\x0e127.0.0.1:8081".to_vec()
        );
        let six: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(decode(encode(six, 5).as_bytes()), Some((six, Some(5))));
    }

    #[test]
    fn legacy_plain_base64() {
        let v = STANDARD.encode("10.0.0.1:80");
        assert_eq!(
            decode(v.as_bytes()),
            Some(("10.0.0.1:80".parse().unwrap(), None))
        );
        let v = STANDARD_NO_PAD.encode("10.0.0.12:8080");
        assert_eq!(
            decode(v.as_bytes()),
            Some(("10.0.0.12:8080".parse().unwrap(), None))
        );
    }

    #[test]
    fn garbage() {
        for bad in [
            &b""[..],
            b"!!!",
            b"AAAA",
            b"CgA=",
            b"\xff\xfe",
            &[b'Q'; 300],
        ] {
            assert_eq!(decode(bad), None);
        }
        // A protobuf whose address is not ip:port.
        let v = STANDARD.encode(b"\x0a\x05hello");
        assert_eq!(decode(v.as_bytes()), None);
    }
}
