//! The hand-off header value of each server, computed once per worker: a steady client or
//! a table hit names the same few servers on every request, and the value (base64 of
//! `ip:port` under `stateful_session`) would otherwise be formatted and encoded, with two
//! heap allocations, every time. The same values answer the reverse question on the
//! response: which server the stateful_session response header names.

use crate::addr;
use crate::config::Handoff;
use std::net::SocketAddr;

/// Servers remembered per worker; beyond this, the oldest entry is replaced.
pub const MAX_SERVERS: usize = 64;

#[derive(Debug, Default)]
pub struct HandoffValues {
    entries: Vec<(SocketAddr, Box<[u8]>)>,
    /// Next entry replaced once full.
    next: usize,
}

impl HandoffValues {
    fn insert(&mut self, server: SocketAddr, value: Box<[u8]>) -> usize {
        if self.entries.len() < MAX_SERVERS {
            self.entries.push((server, value));
            return self.entries.len() - 1;
        }
        let i = self.next % MAX_SERVERS;
        self.next = i + 1;
        if let Some(e) = self.entries.get_mut(i) {
            *e = (server, value);
        }
        i
    }

    /// The request header value that hands `server` to Envoy.
    pub fn value(&mut self, handoff: Handoff, server: SocketAddr) -> &[u8] {
        let i = match self.entries.iter().position(|(s, _)| *s == server) {
            Some(i) => i,
            None => {
                let v = addr::handoff_value(handoff, server).into_bytes();
                self.insert(server, v.into_boxed_slice())
            }
        };
        self.entries.get(i).map_or(&[], |(_, v)| v)
    }

    /// The server the stateful_session response header `raw` names (base64 `ip:port`):
    /// from the values already computed when `raw` is one of them, parsed otherwise (and
    /// then remembered, when it is exactly the value this worker would write).
    pub fn session_server(&mut self, raw: &[u8]) -> Option<SocketAddr> {
        if let Some((s, _)) = self.entries.iter().find(|(_, v)| **v == *raw) {
            return Some(*s);
        }
        let server = addr::parse_session_header(raw)?;
        let v = addr::handoff_value(Handoff::StatefulSession, server).into_bytes();
        if v == raw {
            self.insert(server, v.into_boxed_slice());
        }
        Some(server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn same_values_as_computed_every_time() {
        let mut c = HandoffValues::default();
        for round in 0..3 {
            for i in 0..(MAX_SERVERS as u16 + 10) {
                let s = SocketAddr::new(a("10.0.0.1:1").ip(), 8000 + i);
                for h in [Handoff::StatefulSession, Handoff::OverrideHost] {
                    let mut fresh = HandoffValues::default();
                    let want = addr::handoff_value(h, s);
                    assert_eq!(fresh.value(h, s), want.as_bytes(), "{round} {i}");
                }
                let want = addr::handoff_value(Handoff::StatefulSession, s);
                assert_eq!(c.value(Handoff::StatefulSession, s), want.as_bytes());
                assert_eq!(c.session_server(want.as_bytes()), Some(s));
            }
            assert!(c.entries.len() <= MAX_SERVERS);
        }
        let six = a("[2001:db8::7]:443");
        let v = addr::handoff_value(Handoff::StatefulSession, six);
        assert_eq!(c.session_server(v.as_bytes()), Some(six));
        assert_eq!(c.session_server(v.as_bytes()), Some(six), "remembered");
        assert_eq!(c.value(Handoff::StatefulSession, six), v.as_bytes());
        assert_eq!(c.session_server(b"%%%"), None);
        assert_eq!(c.session_server(b""), None);
    }
}
