//! Every cookie format's decoder, through the same entry point the filter uses
//! (`CookiePersistence::read`; ingress-nginx's persistent and balanced cookies included),
//! on any Cookie header and clock, and the `session_header`
//! token reader (`SessionHeaderPersistence::read`) on any header value: never panics. A sealed
//! cookie that opens must have been sealed by the key, which a fuzzer cannot forge: if one
//! ever decodes to a server, the AEAD has been broken (or the test is wrong).
#![no_main]
use libfuzzer_sys::fuzz_target;
use persist_core::codec::{bigip, envoy, ingress_nginx, nginx};
use persist_core::config::{Config, Kind};
use persist_core::persistence::cookie::{CookiePersistence, Found};
use persist_core::persistence::session_header::{SessionHeaderPersistence, Token};
use std::time::Duration;

const KEY: [u8; 32] = [7; 32];

fn profile(format: &str) -> CookiePersistence {
    // ingress_nginx with its endpoints, so that both its modes are decoded.
    let extra = if format == "ingress_nginx" {
        r#","ingress_nginx":{"backend":"ns-web-80","endpoints":["10.0.0.1:80","[fd00::1]:8080"]}"#
    } else {
        ""
    };
    let json = format!(r#"{{"type":"http_cookie","cookie":{{"format":"{format}"{extra}}}}}"#);
    let Ok(config) = Config::parse(json.as_bytes()) else {
        panic!("fixed config")
    };
    let Kind::HttpCookie(c) = &config.kind else {
        panic!("fixed config")
    };
    let Some(p) = CookiePersistence::new(c, &[KEY], Duration::from_secs(1200), None) else {
        panic!("fixed config")
    };
    p
}

fn session_header() -> SessionHeaderPersistence {
    let Ok(config) = Config::parse(br#"{"type":"session_header"}"#) else {
        panic!("fixed config")
    };
    let Kind::SessionHeader(c) = &config.kind else {
        panic!("fixed config")
    };
    let Some(p) = SessionHeaderPersistence::new(c, &[KEY], &config) else {
        panic!("fixed config")
    };
    p
}

fuzz_target!(|data: &[u8]| {
    let now = 1_800_000_000u64;
    let token = session_header().read(Some(data), now);
    assert!(!matches!(token, Token::Server(_)), "forged session token");
    for format in ["sealed", "envoy", "nginx", "bigip", "ingress_nginx"] {
        let p = profile(format);
        let mut header = b"persist=".to_vec();
        header.extend_from_slice(data);
        let found = p.read(Some(&header), now);
        if format == "sealed" {
            assert!(!matches!(found, Found::Server(_)), "forged sealed cookie");
        }
        let _ = p.read(Some(data), now);
    }
    let _ = envoy::decode(data);
    let _ = nginx::decode(data);
    let _ = bigip::decode(data);
    let bk = ingress_nginx::backend_key("ns-web-80");
    let _ = ingress_nginx::decode(data, bk.as_bytes());
    let _ = ingress_nginx::Ring::new(&["10.0.0.1:80".parse().unwrap_or(([0, 0, 0, 0], 0).into())])
        .find(data);
});
