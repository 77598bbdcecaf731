//! What the mirror reads from etcd, on any bytes (a broken or hostile etcd, or someone
//! writing under the prefix): watch messages, load pages and lookup answers decode without
//! panicking, and every binding they yield names a key of the profile's key space; merging
//! it into a slot keeps the slot within capacity.
#![no_main]
use libfuzzer_sys::fuzz_target;
use persist_core::mirror::follow::{lookup_answer, Follower};
use persist_core::mirror::record::{decode_value, KeySpace};
use persist_core::table::entry::Timeouts;
use persist_core::table::slot::Slot;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let keys = KeySpace::new("/persist/", "fuzz", &[7; 32]);
    let _ = decode_value(data);
    let _ = keys.digest(data);
    let mut records = Vec::new();
    records.extend(lookup_answer(&keys, data));
    // A follower in each phase: loading (a page), then watching (a stream message).
    let mut f = Follower::new(keys.clone());
    let _ = f.start(0);
    let (page, _) = f.on_range(data, 0);
    records.extend(page);
    let mut w = Follower::new(keys.clone());
    let _ = w.start(0);
    let _ = w.on_range(b"", 0);
    records.extend(w.on_watch(data, 0).records);
    let t = Timeouts::new(Duration::from_secs(60), None);
    let mut slot = Slot::default();
    for r in records {
        assert_eq!(keys.digest(&keys.key(&r.digest)), Some(r.digest));
        let remote = r.entry(u64::from(r.digest[0]));
        let _ = slot.merge(remote, 1_800_000_000, 3, &t);
        assert!(slot.entries.len() <= 3);
    }
});
