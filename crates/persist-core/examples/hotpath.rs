//! Module-internal costs of the request path, old way against new, measured where the
//! filter runs them: built for wasm32-wasip1 and run under Node's V8 (scripts/hotpath.sh).
//! Each figure is the best of several batches (ns per operation), so load on the host
//! raises it less than it raises Envoy's CPU per request. Host calls are not included.
#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use persist_core::addr;
use persist_core::codec::gcm::Gcm;
use persist_core::config::{Config, Handoff, Kind};
use persist_core::persistence::cookie::CookiePersistence;
use persist_core::table::entry::Timeouts;
use persist_core::table::slot::{Expect, Slot};
use persist_core::table::Table;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn best_ns(iters: u32, mut f: impl FnMut(u32)) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..15 {
        let t = Instant::now();
        for i in 0..iters {
            f(i);
        }
        best = best.min(t.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    best
}

fn row(what: &str, old: f64, new: f64) {
    println!("| {what} | {old:.0} | {new:.0} |");
}

fn main() {
    println!("| operation | before (ns) | after (ns) |\n|---|--:|--:|");
    let key = [7u8; 32];
    let aad = b"envoy-persist:persist";
    let crate_gcm = Aes256Gcm::new((&key).into());
    let gcm = Gcm::new(&key, aad);
    for (what, len) in [
        ("AES-256-GCM seal, IPv4 body (15 B)", 15),
        ("AES-256-GCM seal, IPv6 body (27 B)", 27),
    ] {
        let old = best_ns(2000, |i| {
            let mut body = [i as u8; 32];
            let n = [3u8; 12];
            black_box(
                crate_gcm
                    .encrypt_in_place_detached(Nonce::from_slice(&n), aad, &mut body[..len])
                    .ok(),
            );
        });
        let new = best_ns(2000, |i| {
            let mut body = [i as u8; 32];
            black_box(gcm.seal(&[3u8; 12], &mut body[..len]));
        });
        row(what, old, new);
    }
    let servers: Vec<SocketAddr> = (0..3)
        .map(|i| SocketAddr::from(([10, 0, 0, 1], 8080 + i)))
        .collect();
    let old = best_ns(20000, |i| {
        black_box(addr::handoff_value(
            Handoff::StatefulSession,
            servers[(i % 3) as usize],
        ));
    });
    let mut cache = persist_core::flow::HandoffValues::default();
    let new = best_ns(20000, |i| {
        black_box(
            cache
                .value(Handoff::StatefulSession, servers[(i % 3) as usize])
                .len(),
        );
    });
    row("hand-off header value of a server", old, new);
    let header = addr::handoff_value(Handoff::StatefulSession, servers[1]);
    let old = best_ns(20000, |_| {
        black_box(addr::parse_session_header(black_box(header.as_bytes())));
    });
    let new = best_ns(20000, |_| {
        black_box(cache.session_server(black_box(header.as_bytes())));
    });
    row(
        "server named by the stateful_session response header",
        old,
        new,
    );
    let t = Timeouts::new(Duration::from_secs(3600), None);
    let mut slot = Slot::default();
    for fp in 0..16u64 {
        slot.bind(
            fp * 31,
            servers[(fp % 3) as usize],
            0,
            1000,
            16,
            &t,
            Expect::Any,
        );
    }
    let raw = slot.encode();
    let old = best_ns(20000, |i| {
        black_box(Slot::decode(&raw).find(u64::from(i % 16) * 31).copied());
    });
    let new = best_ns(20000, |i| {
        black_box(Slot::find_encoded(&raw, u64::from(i % 16) * 31));
    });
    row("entry of a key in a full slot (16 entries)", old, new);
    let table = Table::new(
        "users",
        200_000,
        t,
        persist_core::table::secret::HashKey::new(&[0x5a; persist_core::table::secret::SECRET_LEN]),
    );
    let old = best_ns(20000, |i| {
        black_box(table.slot_key(i % 12500).len());
    });
    let new = best_ns(20000, |i| {
        black_box(table.with_slot_key(i % 12500, str::len));
    });
    row("shared-data key of a slot", old, new);
    // The module's whole work on a steady request (read the Cookie header, the cookie from
    // the opened-cookie cache, the expiry checks) and on a new client's response (decide,
    // seal, base64, the Set-Cookie string); after the changes only.
    let cfg = Config::parse(br#"{"type":"http_cookie","cookie":{"keys":["ZW52b3ktcGVyc2lzdCBkZW1vIGtleTogQ0hBTkdFISE="]}}"#).unwrap();
    let Kind::HttpCookie(c) = &cfg.kind else {
        return;
    };
    let p = CookiePersistence::new(c, &c.keys, cfg.timeout, cfg.absolute_timeout).unwrap();
    let now = 1_800_000_000;
    let sc = p
        .reply(None, servers[0], now, || Some([1; 12]))
        .set_cookie
        .unwrap();
    let header = format!(
        "lang=en; persist={}; theme=dark",
        sc.split(';').next().unwrap().split_once('=').unwrap().1
    );
    let steady = best_ns(20000, |_| {
        black_box(p.read(Some(black_box(header.as_bytes())), now + 10));
    });
    println!(
        "| steady sealed cookie: Cookie header → server (cache hit, checks) | - | {steady:.0} |"
    );
    let parse = best_ns(20000, |_| {
        black_box(
            persist_core::cookie::header::values(black_box(header.as_bytes()), b"persist").next(),
        );
    });
    println!("| … of which: finding the cookie in the header | - | {parse:.0} |");
    let sealer = persist_core::codec::sealed::Sealer::new(&c.keys, "persist").unwrap();
    let value = header
        .split("persist=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    sealer.open(value.as_bytes());
    let open = best_ns(20000, |_| {
        black_box(sealer.open(black_box(value.as_bytes())));
    });
    println!("| … of which: opening it from the cache | - | {open:.0} |");
    let new = best_ns(2000, |i| {
        black_box(p.reply(None, servers[(i % 3) as usize], now, || Some([i as u8; 12])));
    });
    println!("| new client: the Set-Cookie of the server that answered (seal, base64, string) | - | {new:.0} |");
    // What the table's keyed hash (SipHash-2-4, 128 bits) costs,
    // beside a keyed SipHash-1-3 run twice for 128 bits, as an indication.
    let keys: Vec<String> = (0..1000).map(|i| format!("u{}", i * 7919)).collect();
    let md5 = best_ns(20000, |i| {
        black_box(table.hash(keys[(i % 1000) as usize].as_bytes()));
    });
    let sip = best_ns(20000, |i| {
        use std::hash::{BuildHasher, Hasher};
        let k = keys[(i % 1000) as usize].as_bytes();
        let mut h = [0u64; 2];
        for (n, out) in h.iter_mut().enumerate() {
            let mut s = SIP[n].build_hasher();
            s.write(k);
            *out = s.finish();
        }
        black_box(h);
    });
    println!(
        "| table key hash: keyed SipHash-2-4-128 (std SipHash-1-3 x2 for comparison) | {md5:.0} | {sip:.0} |"
    );
}

static SIP: std::sync::LazyLock<[std::collections::hash_map::RandomState; 2]> =
    std::sync::LazyLock::new(|| [Default::default(), Default::default()]);
