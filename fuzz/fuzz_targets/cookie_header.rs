//! The `Cookie` header reader on any bytes, with any cookie name: never panics, and every
//! value it yields is a sub-slice of the header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use persist_core::cookie::header;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b) % 16);
    let (name, h) = data
        .get(1..)
        .unwrap_or_default()
        .split_at(split.min(data.len().saturating_sub(1)));
    for v in header::values(h, name) {
        assert!(v.len() <= h.len());
    }
});
