//! One binding as stored in a slot: version-free fixed fields, the slot carries the version.
//!
//! ```text
//! fingerprint u64 LE | created u32 LE | last_use u32 LE | family u8 (4|6) | ip (4|16) | port u16 LE
//! ```
//! Times are whole seconds since the Unix epoch (u32: good until 2106). An IPv4 entry is 23
//! bytes, an IPv6 entry 35. An entry that records its cluster (README "Weighted clusters")
//! sets [`CLUSTER_FLAG`] in the family byte and ends with the cluster tag (u32 LE): 4 more
//! bytes, and entries written before read as they did.

use std::net::SocketAddr;

/// Set in the family byte of an entry followed by a cluster tag.
pub const CLUSTER_FLAG: u8 = 0x80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// 64 bits of the key's hash: identifies the key within its slot.
    pub fingerprint: u64,
    pub server: SocketAddr,
    /// When the key was bound to this server.
    pub created: u32,
    /// When the binding was last used (refreshed at most once per `timeout/4`).
    pub last_use: u32,
    /// The tag of the cluster the server answered from; 0: none recorded.
    pub cluster: u32,
}

/// Reads fixed-size little-endian fields off the front of a byte slice, never panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
}

impl Entry {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(&self.last_use.to_le_bytes());
        let flag = if self.cluster != 0 { CLUSTER_FLAG } else { 0 };
        crate::addr::push_flagged_ip(out, self.server.ip(), flag);
        out.extend_from_slice(&self.server.port().to_le_bytes());
        if self.cluster != 0 {
            out.extend_from_slice(&self.cluster.to_le_bytes());
        }
    }

    /// Decodes one entry from the front of `raw`; returns it and the rest.
    pub fn decode(raw: &[u8]) -> Option<(Entry, &[u8])> {
        let mut r = Reader(raw);
        let fingerprint = u64::from_le_bytes(r.take()?);
        let created = u32::from_le_bytes(r.take()?);
        let last_use = u32::from_le_bytes(r.take()?);
        let (ip, flags, rest) = crate::addr::split_flagged_ip(r.0)?;
        if flags & !CLUSTER_FLAG != 0 {
            return None;
        }
        r.0 = rest;
        let port = u16::from_le_bytes(r.take()?);
        let cluster = if flags == CLUSTER_FLAG {
            u32::from_le_bytes(r.take()?)
        } else {
            0
        };
        let entry = Entry {
            fingerprint,
            server: SocketAddr::new(ip, port),
            created,
            last_use,
            cluster,
        };
        Some((entry, r.0))
    }

    /// The second (Unix time) from which this entry no longer counts.
    pub fn expires_at(&self, timeouts: &Timeouts) -> u64 {
        timeouts.expires_at(self.created, self.last_use)
    }

    pub fn is_expired(&self, timeouts: &Timeouts, now_s: u32) -> bool {
        u64::from(now_s) >= self.expires_at(timeouts)
    }
}

/// The table's timeouts in whole seconds (sub-second values round up to one second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub idle_s: u64,
    pub absolute_s: Option<u64>,
}

impl Timeouts {
    pub fn new(idle: std::time::Duration, absolute: Option<std::time::Duration>) -> Self {
        let secs = |d: std::time::Duration| {
            u64::try_from(d.as_millis().div_ceil(1000).max(1)).unwrap_or(u64::MAX)
        };
        Timeouts {
            idle_s: secs(idle),
            absolute_s: absolute.map(secs),
        }
    }

    /// The second (Unix time) from which a binding created and last used at these times
    /// no longer counts.
    pub fn expires_at(&self, created: u32, last_use: u32) -> u64 {
        let idle = u64::from(last_use).saturating_add(self.idle_s);
        match self.absolute_s {
            Some(abs) => idle.min(u64::from(created).saturating_add(abs)),
            None => idle,
        }
    }

    /// A use refreshes `last_use` only when it is at least this old (README "Locally stored types": `timeout/4`).
    pub fn refresh_after_s(&self) -> u64 {
        (self.idle_s / 4).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn round_trip_both_families() {
        for server in ["10.1.2.3:8080", "[2001:db8::7]:443"] {
            let e = Entry {
                fingerprint: 0x0123_4567_89ab_cdef,
                server: server.parse().unwrap(),
                created: 1_700_000_000,
                last_use: 1_700_000_100,
                cluster: 0,
            };
            for e in [
                e,
                Entry {
                    cluster: 0x0102_0304,
                    ..e
                },
            ] {
                let mut buf = Vec::new();
                e.encode_into(&mut buf);
                buf.push(0xaa);
                let (back, rest) = Entry::decode(&buf).unwrap();
                assert_eq!(back, e);
                assert_eq!(rest, &[0xaa]);
            }
        }
    }

    #[test]
    fn a_cluster_costs_four_bytes_and_entries_without_read_as_before() {
        let e = Entry {
            fingerprint: 9,
            server: "1.2.3.4:5".parse().unwrap(),
            created: 2,
            last_use: 3,
            cluster: 0,
        };
        let (mut plain, mut tagged) = (Vec::new(), Vec::new());
        e.encode_into(&mut plain);
        Entry { cluster: 7, ..e }.encode_into(&mut tagged);
        assert_eq!(plain.len(), 23);
        assert_eq!(tagged.len(), 27);
        assert_eq!(tagged[16], 4 | CLUSTER_FLAG);
        assert_eq!(tagged[23..], 7u32.to_le_bytes());
        // Two entries back to back, one of each: both found.
        let mut both = tagged.clone();
        both.extend_from_slice(&plain);
        let (first, rest) = Entry::decode(&both).unwrap();
        assert_eq!(first.cluster, 7);
        assert_eq!(Entry::decode(rest).unwrap().0, e);
        for n in 0..tagged.len() {
            assert!(Entry::decode(&tagged[..n]).is_none(), "prefix {n}");
        }
        // Another flag in the family byte is not an entry of this format.
        let mut other = tagged.clone();
        other[16] = 4 | 0x40;
        assert!(Entry::decode(&other).is_none());
        assert!(crate::addr::split_tagged_ip(&tagged[16..]).is_none());
    }

    #[test]
    fn truncated_or_bad_family_is_rejected() {
        let e = Entry {
            fingerprint: 1,
            server: "1.2.3.4:5".parse().unwrap(),
            created: 2,
            last_use: 3,
            cluster: 0,
        };
        let mut buf = Vec::new();
        e.encode_into(&mut buf);
        assert_eq!(buf.len(), 23);
        for n in 0..buf.len() {
            assert!(Entry::decode(&buf[..n]).is_none(), "prefix {n}");
        }
        buf[16] = 5;
        assert!(Entry::decode(&buf).is_none());
    }

    #[test]
    fn expiry() {
        let t = Timeouts::new(
            std::time::Duration::from_secs(60),
            Some(std::time::Duration::from_secs(100)),
        );
        let e = Entry {
            fingerprint: 1,
            server: "1.2.3.4:5".parse().unwrap(),
            created: 1000,
            last_use: 1050,
            cluster: 0,
        };
        assert!(!e.is_expired(&t, 1099));
        assert!(e.is_expired(&t, 1100)); // absolute: created + 100
        let idle_only = Timeouts::new(std::time::Duration::from_secs(60), None);
        assert!(!e.is_expired(&idle_only, 1109));
        assert!(e.is_expired(&idle_only, 1110));
        assert_eq!(idle_only.refresh_after_s(), 15);
        assert_eq!(
            Timeouts::new(std::time::Duration::from_millis(1500), None).idle_s,
            2
        );
    }
}
