//! The persist table's slot codec and its rules on any stored bytes (shared data another
//! version, or a bug, could have written): decoding never panics, and a bind never leaves
//! more entries than the slot's capacity after a new binding, and the key is bound after.
#![no_main]
use libfuzzer_sys::fuzz_target;
use persist_core::table::entry::Timeouts;
use persist_core::table::slot::{Expect, Slot};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let mut slot = Slot::decode(data);
    let again = Slot::decode(&slot.encode());
    assert_eq!(again, slot);
    let t = Timeouts::new(Duration::from_secs(60), Some(Duration::from_secs(600)));
    let cap = usize::from(data.first().copied().unwrap_or(1) % 17).max(1);
    let fp = u64::from(data.len() as u32);
    let _ = slot.drop_expired(&t, 1_800_000_000);
    let server = "10.0.0.1:80".parse().unwrap_or_else(|_| unreachable!());
    // A cluster tag too (README "Weighted clusters"): bound with the server.
    let cluster = u32::from(data.get(1).copied().unwrap_or(0));
    let e = slot.bind(fp, server, cluster, 1_800_000_000, cap, &t, Expect::Any);
    if e.new {
        assert!(slot.entries.len() <= cap, "{} > {cap}", slot.entries.len());
    }
    assert_eq!(
        slot.find(fp).map(|e| (e.server, e.cluster)),
        Some((server, cluster))
    );
});
