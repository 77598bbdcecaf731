//! Upstream server addresses as Envoy prints them (`ip:port`, `[v6]:port`), and the value of
//! the hand-off header for each hand-off mode (README "How it works").

use crate::config::Handoff;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Parses `ip:port` / `[ipv6]:port` from raw bytes.
pub fn parse(raw: &[u8]) -> Option<SocketAddr> {
    if raw.len() > 64 {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// The request header value that hands `addr` to Envoy.
pub fn handoff_value(handoff: Handoff, addr: SocketAddr) -> String {
    match handoff {
        Handoff::StatefulSession => STANDARD.encode(addr.to_string()),
        Handoff::OverrideHost => addr.to_string(),
    }
}

/// Decodes the response header Envoy's header session state writes (base64 `ip:port`).
pub fn parse_session_header(raw: &[u8]) -> Option<SocketAddr> {
    let mut buf = [0u8; 96];
    let n = STANDARD.decode_slice(raw, &mut buf).ok()?;
    parse(buf.get(..n)?)
}

/// Appends `ip` as the binary formats store it (sealed cookies, table entries): a family
/// byte, `4` or `6`, then the 4 or 16 octets.
pub fn push_tagged_ip(out: &mut Vec<u8>, ip: IpAddr) {
    push_flagged_ip(out, ip, 0);
}

/// The bits of the family byte that hold the family; a format may use the others as flags
/// (a table entry marks a recorded cluster so).
const FAMILY_BITS: u8 = 0x0f;

/// As [`push_tagged_ip`], with `flags` (outside [`FAMILY_BITS`]) set in the family byte.
pub fn push_flagged_ip(out: &mut Vec<u8>, ip: IpAddr, flags: u8) {
    let flags = flags & !FAMILY_BITS;
    match ip {
        IpAddr::V4(v4) => {
            out.push(4 | flags);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6 | flags);
            out.extend_from_slice(&v6.octets());
        }
    }
}

/// Reads a family-tagged IP address (see [`push_tagged_ip`]) off the front of `raw`;
/// returns it and the rest, or `None` for a short input, an unknown family or flags.
pub fn split_tagged_ip(raw: &[u8]) -> Option<(IpAddr, &[u8])> {
    match split_flagged_ip(raw)? {
        (ip, 0, rest) => Some((ip, rest)),
        _ => None,
    }
}

/// Reads an address written by [`push_flagged_ip`]: the address, the flags of its family
/// byte and the rest, or `None` for a short input or an unknown family.
pub fn split_flagged_ip(raw: &[u8]) -> Option<(IpAddr, u8, &[u8])> {
    let (family, rest) = raw.split_first()?;
    let flags = family & !FAMILY_BITS;
    match family & FAMILY_BITS {
        4 => {
            let (o, rest) = rest.split_first_chunk::<4>()?;
            Some((IpAddr::V4(Ipv4Addr::from(*o)), flags, rest))
        }
        6 => {
            let (o, rest) = rest.split_first_chunk::<16>()?;
            Some((IpAddr::V6(Ipv6Addr::from(*o)), flags, rest))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn handoff_forms() {
        let a: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        assert_eq!(handoff_value(Handoff::OverrideHost, a), "127.0.0.1:8081");
        let b = handoff_value(Handoff::StatefulSession, a);
        assert_eq!(b, "MTI3LjAuMC4xOjgwODE=");
        assert_eq!(parse_session_header(b.as_bytes()), Some(a));
        let six: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(handoff_value(Handoff::OverrideHost, six), "[::1]:80");
    }

    #[test]
    fn tagged_ip_round_trip() {
        for ip in ["10.1.2.3", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = Vec::new();
            push_tagged_ip(&mut buf, ip);
            buf.push(9);
            assert_eq!(split_tagged_ip(&buf), Some((ip, &[9u8][..])));
            for n in 0..buf.len() - 1 {
                assert_eq!(split_tagged_ip(&buf[..n]), None, "prefix {n}");
            }
        }
        assert_eq!(split_tagged_ip(&[5, 1, 2, 3, 4]), None);
    }

    #[test]
    fn rejects() {
        assert_eq!(parse(b"host:80"), None);
        assert_eq!(parse(b"1.2.3.4"), None);
        assert_eq!(parse(&[0xff; 10]), None);
        assert_eq!(parse_session_header(b"%%%"), None);
        assert_eq!(parse_session_header(&[b'A'; 400]), None);
    }
}
