//! Server addresses as text (`ip:port`, `[v6]:port`), cached per worker thread: the upstream
//! override takes a server as text and `upstream.address` gives one back as text, for the
//! same few servers on every request. Formatting (`core::fmt`) and parsing them anew cost
//! more than everything else the module does on a steady request (see bench/OPTIMIZATIONS.md,
//! "Native module"); the cache answers both directions with one comparison.

use std::cell::RefCell;
use std::net::SocketAddr;

/// Servers remembered per thread; beyond this, the oldest entry is replaced.
pub const MAX_SERVERS: usize = 64;

/// Longest text of a socket address: `[` + 45 (IPv6 with an embedded IPv4) + `]:65535`.
const MAX_TEXT: usize = 64;

#[derive(Debug, Default)]
pub struct AddrTexts {
    entries: Vec<(SocketAddr, Box<[u8]>)>,
    /// Next entry replaced once full.
    next: usize,
}

impl AddrTexts {
    fn insert(&mut self, server: SocketAddr, text: Box<[u8]>) -> usize {
        if self.entries.len() < MAX_SERVERS {
            self.entries.push((server, text));
            return self.entries.len() - 1;
        }
        let i = self.next % MAX_SERVERS;
        self.next = i + 1;
        if let Some(e) = self.entries.get_mut(i) {
            *e = (server, text);
        }
        i
    }

    /// `server` as Envoy writes an address (what `SocketAddr`'s `Display` gives).
    pub fn text(&mut self, server: SocketAddr) -> &[u8] {
        let i = match self.entries.iter().position(|(s, _)| *s == server) {
            Some(i) => i,
            None => {
                let t = server.to_string().into_bytes().into_boxed_slice();
                self.insert(server, t)
            }
        };
        self.entries.get(i).map_or(&[], |(_, t)| t)
    }

    /// The address `raw` names: from the cache when it is one of the texts, parsed
    /// otherwise (and remembered when `raw` is exactly the canonical text of what it names).
    pub fn addr(&mut self, raw: &[u8]) -> Option<SocketAddr> {
        if let Some((s, _)) = self.entries.iter().find(|(_, t)| **t == *raw) {
            return Some(*s);
        }
        if raw.len() > MAX_TEXT {
            return None;
        }
        let server: SocketAddr = std::str::from_utf8(raw).ok()?.parse().ok()?;
        let t = server.to_string().into_bytes();
        if t == raw {
            self.insert(server, t.into_boxed_slice());
        }
        Some(server)
    }
}

thread_local! {
    static TEXTS: RefCell<AddrTexts> = RefCell::new(AddrTexts::default());
}

/// Runs `f` with `server`'s text (this thread's cache).
pub fn with_text<R>(server: SocketAddr, f: impl FnOnce(&[u8]) -> R) -> R {
    TEXTS.with(|c| match c.try_borrow_mut() {
        Ok(mut c) => f(c.text(server)),
        Err(_) => f(server.to_string().as_bytes()),
    })
}

/// The address `raw` names (this thread's cache).
pub fn parse(raw: &[u8]) -> Option<SocketAddr> {
    TEXTS.with(|c| match c.try_borrow_mut() {
        Ok(mut c) => c.addr(raw),
        Err(_) => persist_core::addr::parse(raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_as_formatting_and_parsing_every_time() {
        let mut c = AddrTexts::default();
        for round in 0..3 {
            for i in 0..(MAX_SERVERS as u16 + 10) {
                for ip in ["10.0.0.1", "[2001:db8::7]", "[::ffff:1.2.3.4]"] {
                    let s: SocketAddr = format!("{ip}:{}", 8000 + i).parse().unwrap();
                    let want = s.to_string();
                    assert_eq!(c.text(s), want.as_bytes(), "{round} {s}");
                    assert_eq!(c.addr(want.as_bytes()), Some(s), "{round} {s}");
                    assert_eq!(persist_core::addr::parse(want.as_bytes()), Some(s));
                }
            }
            assert!(c.entries.len() <= MAX_SERVERS);
        }
        // Texts that are not canonical still parse, and are not remembered.
        let before = c.entries.clone();
        let s: SocketAddr = "[2001:db8::7]:443".parse().unwrap();
        assert_eq!(c.addr(b"[2001:0db8::7]:443"), Some(s));
        assert_eq!(c.entries, before);
        for bad in [
            &b""[..],
            b"%%%",
            b"10.0.0.1",
            b"10.0.0.1:99999",
            &[b'1'; 100],
            &[0xff, 0xfe],
        ] {
            assert_eq!(c.addr(bad), None, "{bad:?}");
            assert_eq!(persist_core::addr::parse(bad), None, "{bad:?}");
        }
        assert_eq!(c.entries, before);
    }

    #[test]
    fn thread_cache_helpers() {
        let s: SocketAddr = "127.0.0.1:17081".parse().unwrap();
        assert_eq!(with_text(s, |t| t.to_vec()), b"127.0.0.1:17081");
        assert_eq!(parse(b"127.0.0.1:17081"), Some(s));
        // Re-entered (a nested call while borrowed) still answers.
        with_text(s, |_| assert_eq!(parse(b"127.0.0.1:17081"), Some(s)));
    }
}
