//! The plugin JSON as the native module reads it: exactly the configuration of the wasm
//! module (`persist_core::config::Config::parse`), plus one native-only field:
//!
//! - `strict` (bool, default false): when the persisted server cannot be used (its health
//!   status is not one of the cluster's `override_host_status`, or it left the cluster),
//!   answer 503 instead of letting the load balancer choose another. Under the wasm module
//!   this is the `strict` of the stateful_session filter placed after it; natively there is
//!   no such filter, the module names the host itself through the ABI's upstream override.
//!
//! `strict` is taken out before the rest goes to `Config::parse`, so that errors name fields
//! exactly as the wasm module does.

use persist_core::config::Config;

#[derive(Debug)]
pub struct Settings {
    pub config: Config,
    pub strict: bool,
    /// The JSON `Config::parse` accepted (without `strict`).
    pub core_json: Vec<u8>,
}

/// One line naming the field, as `Config::parse` words its errors.
pub fn parse(json: &[u8]) -> Result<Settings, String> {
    let mut strict = false;
    let mut core_json = json.to_vec();
    // Only a JSON object can carry `strict`; anything else goes to Config::parse untouched,
    // which refuses it with its own words.
    if let Ok(serde_json::Value::Object(mut map)) = serde_json::from_slice(json) {
        if let Some(v) = map.remove("strict") {
            strict = v
                .as_bool()
                .ok_or("invalid configuration: strict: expected a boolean")?;
            core_json = serde_json::to_vec(&serde_json::Value::Object(map))
                .map_err(|e| format!("invalid configuration: {e}"))?;
        }
    }
    let config = Config::parse(&core_json).map_err(|e| e.to_string())?;
    if config.mirror.is_some() {
        return Err(
            "invalid configuration: mirror: not available in the native module (wasm only)"
                .to_string(),
        );
    }
    Ok(Settings {
        config,
        strict,
        core_json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ZW52b3ktcGVyc2lzdCBkZW1vIGtleTogQ0hBTkdFISE=";

    fn cookie(extra: &str) -> String {
        format!(r#"{{"name":"web","type":"http_cookie","cookie":{{"keys":["{KEY}"]}}{extra}}}"#)
    }

    #[test]
    fn strict_is_native_only_and_optional() {
        let s = parse(cookie("").as_bytes()).unwrap();
        assert!(!s.strict);
        assert_eq!(s.config.name, "web");
        let s = parse(cookie(r#","strict":true"#).as_bytes()).unwrap();
        assert!(s.strict);
        assert!(!String::from_utf8(s.core_json).unwrap().contains("strict"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(cookie(r#","strict":"yes""#).as_bytes()).unwrap_err();
        assert!(e.contains("strict"), "{e}");
        let e = parse(cookie(r#","bogus":1"#).as_bytes()).unwrap_err();
        assert!(e.contains("invalid configuration: bogus"), "{e}");
        let e = parse(br#"{"name":"web","type":"round_robin"}"#).unwrap_err();
        assert!(e.contains("type"), "{e}");
        assert!(parse(b"[]").is_err());
        assert!(parse(b"not json").is_err());
        let e =
            parse(br#"{"name":"m","type":"client_ip","mirror":{"cluster":"etcd"}}"#).unwrap_err();
        assert!(e.contains("mirror"), "{e}");
    }
}
