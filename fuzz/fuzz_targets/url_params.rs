//! Path-parameter and query extraction on any `:path` and name: never panics, and what
//! they return lies inside the path.
#![no_main]
use libfuzzer_sys::fuzz_target;
use persist_core::client_key::url;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b) % 12);
    let rest = data.get(1..).unwrap_or_default();
    let (name, path) = rest.split_at(split.min(rest.len()));
    let name = String::from_utf8_lossy(name);
    for v in [
        url::path_parameter(path, &name),
        url::query_parameter(path, &name),
        Some(url::path_only(path)),
    ]
    .into_iter()
    .flatten()
    {
        assert!(v.len() <= path.len());
    }
});
