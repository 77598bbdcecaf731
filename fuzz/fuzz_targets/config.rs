//! The configuration parser on any bytes: never panics; an error always names a field.
#![no_main]
use libfuzzer_sys::fuzz_target;
use persist_core::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = Config::parse(data) {
        assert!(!e.field.is_empty());
        assert!(e.to_string().starts_with("invalid configuration: "));
    }
});
