//! Key extraction of every type from raw host bytes: client addresses (masked at every
//! prefix), application cookies learned from `Set-Cookie`, the header-map serialization,
//! and the header-safe form of a hash key. Never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use persist_core::client_key::{client_ip, header_safe, response_cookie, url};
use persist_core::config::ClientIpConfig;
use persist_core::cookie::header;
use persist_core::header_pairs;

fuzz_target!(|data: &[u8]| {
    if let Some(ip) = client_ip::parse(data) {
        let prefix = data.first().copied().unwrap_or(0);
        let cfg = ClientIpConfig {
            ipv4_prefix: prefix % 33,
            ipv6_prefix: prefix % 129,
        };
        let k = client_ip::key(ip, &cfg);
        assert!(k.len() == 5 || k.len() == 17);
    }
    let _ = response_cookie::value(data, "JSESSIONID");
    let _ = header_pairs::values(data, b"set-cookie");
    // app_cookie: cookie, then path parameter, then query parameter.
    let _ = header::values(data, b"JSESSIONID").next();
    let _ = url::path_parameter(data, "JSESSIONID");
    let _ = url::query_parameter(data, "jsessionid");
    let safe = header_safe(data);
    assert!(safe.iter().all(|c| (0x20..0x7f).contains(c)));
});
