//! BIG-IP cookie insert: `<ipv4 as little-endian u32>.<port byte-swapped>.0000`, e.g.
//! `10.1.1.100:8080` → `1677787402.36895.0000`. IPv6 servers use BIG-IP's
//! `vi<32 hex digits>.<port byte-swapped>` form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub fn encode(addr: SocketAddr) -> String {
    let port = addr.port().swap_bytes();
    match addr.ip() {
        IpAddr::V4(ip) => format!("{}.{}.0000", u32::from_le_bytes(ip.octets()), port),
        IpAddr::V6(ip) => format!("vi{:032x}.{}", u128::from_be_bytes(ip.octets()), port),
    }
}

fn parse_decimal(d: &[u8], max_len: usize) -> Option<u64> {
    if d.is_empty() || d.len() > max_len || !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(d).ok()?.parse().ok()
}

pub fn decode(value: &[u8]) -> Option<SocketAddr> {
    if let Some(rest) = value.strip_prefix(b"vi") {
        let dot = rest.iter().position(|&c| c == b'.')?;
        let (hex, port) = rest.split_at_checked(dot)?;
        let port = port.get(1..)?;
        if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let ip = u128::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        let port = u16::try_from(parse_decimal(port, 5)?).ok()?;
        return Some(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::from(ip.to_be_bytes())),
            port.swap_bytes(),
        ));
    }
    let mut parts = value.split(|&c| c == b'.');
    let ip = u32::try_from(parse_decimal(parts.next()?, 10)?).ok()?;
    let port = u16::try_from(parse_decimal(parts.next()?, 5)?).ok()?;
    if parts.next()? != b"0000" || parts.next().is_some() {
        return None;
    }
    Some(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(ip.to_le_bytes())),
        port.swap_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn documented_example() {
        let a: SocketAddr = "10.1.1.100:8080".parse().unwrap();
        assert_eq!(encode(a), "1677787402.36895.0000");
        assert_eq!(decode(b"1677787402.36895.0000"), Some(a));
        let l: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        assert_eq!(encode(l), "16777343.37151.0000");
    }

    #[test]
    fn ipv6() {
        let a: SocketAddr = "[2001:112::30]:80".parse().unwrap();
        assert_eq!(encode(a), "vi20010112000000000000000000000030.20480");
        assert_eq!(decode(encode(a).as_bytes()), Some(a));
    }

    #[test]
    fn garbage() {
        for bad in [
            &b""[..],
            b"1.2",
            b"1.2.0001",
            b"1.2.0000.1",
            b"99999999999.1.0000",
            b"1.70000.0000",
            b"a.b.0000",
            b"-1.2.0000",
            b"vi12.80",
            b"vi2001011200000000000000000000003g.80",
            b"vi20010112000000000000000000000030",
        ] {
            assert_eq!(decode(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
