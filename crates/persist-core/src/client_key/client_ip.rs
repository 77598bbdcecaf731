//! The client address Envoy computed (property `source.address`, already honouring
//! `xff_num_trusted_hops`), masked to a prefix so that neighbours can share a server.

use super::ClientKey;
use crate::config::ClientIpConfig;
use crate::host::Host;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug)]
pub struct ClientIpKey(ClientIpConfig);

pub fn key_of(cfg: &ClientIpConfig) -> Box<dyn ClientKey> {
    Box::new(ClientIpKey(*cfg))
}

impl ClientKey for ClientIpKey {
    fn read(&self, host: &dyn Host) -> Option<Vec<u8>> {
        let ip = parse(&host.property(&["source", "address"])?)?;
        Some(key(ip, &self.0))
    }
}

/// Parses `ip:port`, `[v6]:port` or a bare address.
pub fn parse(raw: &[u8]) -> Option<IpAddr> {
    if raw.len() > 64 {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    text.parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| text.parse::<IpAddr>())
        .ok()
        .map(|ip| match ip {
            // An IPv4 client on a dual-stack listener is the same client.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        })
}

fn mask(octets: &mut [u8], prefix: u8) {
    let mut keep = u32::from(prefix);
    for b in octets.iter_mut() {
        let bits = keep.min(8);
        *b &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
        keep -= bits;
    }
}

/// The table key of a client: its masked address bytes and the prefix length.
pub fn key(ip: IpAddr, cfg: &ClientIpConfig) -> Vec<u8> {
    let (mut bytes, prefix) = match ip {
        IpAddr::V4(v4) => (v4.octets().to_vec(), cfg.ipv4_prefix),
        IpAddr::V6(v6) => (v6.octets().to_vec(), cfg.ipv6_prefix),
    };
    mask(&mut bytes, prefix);
    bytes.push(prefix);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn cfg(v4: u8, v6: u8) -> ClientIpConfig {
        ClientIpConfig {
            ipv4_prefix: v4,
            ipv6_prefix: v6,
        }
    }

    #[test]
    fn parses_envoy_forms() {
        assert_eq!(parse(b"10.1.2.3:5555"), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(
            parse(b"[2001:db8::1]:80"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(parse(b"10.1.2.3"), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(
            parse(b"[::ffff:10.0.0.1]:1"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(parse(b"nope"), None);
        assert_eq!(parse(&[0xff; 8]), None);
    }

    #[test]
    fn masks() {
        let a = key("10.1.2.3".parse().unwrap(), &cfg(24, 128));
        let b = key("10.1.2.200".parse().unwrap(), &cfg(24, 128));
        let c = key("10.1.3.3".parse().unwrap(), &cfg(24, 128));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, vec![10, 1, 2, 0, 24]);
        assert_eq!(
            key("10.1.2.3".parse().unwrap(), &cfg(32, 128)),
            vec![10, 1, 2, 3, 32]
        );
        assert_eq!(
            key("255.255.255.255".parse().unwrap(), &cfg(1, 128)),
            vec![128, 0, 0, 0, 1]
        );
        let v6 = key("2001:db8:1:2::9".parse().unwrap(), &cfg(32, 48));
        assert_eq!(&v6[..6], &[0x20, 0x01, 0x0d, 0xb8, 0, 1]);
        assert!(v6[6..16].iter().all(|b| *b == 0));
        assert_eq!(v6[16], 48);
    }
}
