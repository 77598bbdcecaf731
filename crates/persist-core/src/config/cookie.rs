//! The `cookie` section (`http_cookie`, README "Cookie persistence"): raw serde shape and
//! its validation.

use super::{check_token, ConfigDuration, ConfigError};
use base64::Engine;
use serde::Deserialize;
use std::time::Duration;

/// Sealing keys at most (README "Keys": the first seals, all open).
pub const MAX_KEYS: usize = 16;

/// Cookie encodings (README "Cookie formats and migration").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CookieFormat {
    Sealed,
    Envoy,
    Nginx,
    Bigip,
    /// ingress-nginx's affinity cookie (README "Cookie formats and migration").
    IngressNginx,
}

impl CookieFormat {
    /// The `cookie.format` value.
    pub fn as_str(self) -> &'static str {
        match self {
            CookieFormat::Sealed => "sealed",
            CookieFormat::Envoy => "envoy",
            CookieFormat::Nginx => "nginx",
            CookieFormat::Bigip => "bigip",
            CookieFormat::IngressNginx => "ingress_nginx",
        }
    }
}

/// Endpoints at most in `cookie.ingress_nginx.endpoints`.
pub const MAX_INGRESS_ENDPOINTS: usize = 1024;

/// `cookie.ingress_nginx`: what a migration from ingress-nginx needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressNginxConfig {
    /// ingress-nginx's backend name, `<namespace>-<service>-<port>`: the salt of the
    /// `persistent` keys and the source of the backend key.
    pub backend: String,
    /// The backend's endpoints as ingress-nginx had them: `balanced` cookies are mapped
    /// through its ring over these, and `persistent` keys resolve without learning.
    pub endpoints: Vec<std::net::SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIngressNginx {
    backend: Option<String>,
    endpoints: Option<Vec<String>>,
}

impl RawIngressNginx {
    fn validate(self) -> Result<IngressNginxConfig, ConfigError> {
        let backend = self.backend.ok_or_else(|| {
            ConfigError::new(
                "cookie.ingress_nginx.backend",
                "required: ingress-nginx's backend name, <namespace>-<service>-<port>",
            )
        })?;
        if backend.is_empty()
            || backend.len() > 256
            || !backend.bytes().all(|c| c.is_ascii_graphic())
        {
            return Err(ConfigError::new(
                "cookie.ingress_nginx.backend",
                format!("`{backend}`: 1 to 256 printable characters"),
            ));
        }
        let list = self.endpoints.unwrap_or_default();
        if list.len() > MAX_INGRESS_ENDPOINTS {
            return Err(ConfigError::new(
                "cookie.ingress_nginx.endpoints",
                format!("at most {MAX_INGRESS_ENDPOINTS}"),
            ));
        }
        let mut endpoints = Vec::with_capacity(list.len());
        for (i, text) in list.iter().enumerate() {
            let addr = text.parse().map_err(|_| {
                ConfigError::new(
                    &format!("cookie.ingress_nginx.endpoints[{i}]"),
                    format!("`{text}` is not ip:port (IPv6: [ip]:port)"),
                )
            })?;
            if endpoints.contains(&addr) {
                return Err(ConfigError::new(
                    &format!("cookie.ingress_nginx.endpoints[{i}]"),
                    format!("`{text}` given twice"),
                ));
            }
            endpoints.push(addr);
        }
        Ok(IngressNginxConfig { backend, endpoints })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCookie {
    name: Option<String>,
    format: Option<CookieFormat>,
    keys: Option<Vec<String>>,
    path: Option<String>,
    domain: Option<String>,
    secure: Option<bool>,
    http_only: Option<bool>,
    same_site: Option<SameSite>,
    max_age: Option<ConfigDuration>,
    always_send: Option<bool>,
    ingress_nginx: Option<RawIngressNginx>,
}

/// A validated `http_cookie` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    pub name: String,
    pub format: CookieFormat,
    /// Configured sealing keys; empty means "generate one per Envoy process".
    pub keys: Vec<[u8; 32]>,
    pub path: String,
    pub domain: Option<String>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<SameSite>,
    pub max_age: Option<Duration>,
    pub always_send: bool,
    /// `ingress_nginx` format only.
    pub ingress_nginx: Option<IngressNginxConfig>,
}

fn check_attribute(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty()
        || value.len() > 1024
        || !value
            .bytes()
            .all(|c| (0x21..0x7f).contains(&c) && c != b';' && c != b',')
    {
        return Err(ConfigError::new(
            field,
            format!("`{value}` is not a valid cookie attribute value"),
        ));
    }
    Ok(())
}

/// Sealing keys given as base64 of 32 bytes (`cookie.keys`, `session_header.keys`): 1 to
/// [`MAX_KEYS`] of them.
pub(super) fn parse_keys(field: &str, list: &[String]) -> Result<Vec<[u8; 32]>, ConfigError> {
    if list.is_empty() || list.len() > MAX_KEYS {
        return Err(ConfigError::new(
            field,
            format!("give 1 to {MAX_KEYS} keys, or leave the field out to generate one"),
        ));
    }
    let mut keys = Vec::new();
    for (i, text) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| ConfigError::new(&at, "not base64"))?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            ConfigError::new(
                &at,
                format!("must be 32 bytes (AES-256), is {} bytes", bytes.len()),
            )
        })?;
        keys.push(key);
    }
    Ok(keys)
}

impl RawCookie {
    pub(super) fn validate(self) -> Result<CookieConfig, ConfigError> {
        let raw = self;
        let name = raw.name.unwrap_or_else(|| "persist".to_string());
        check_token("cookie.name", &name)?;
        let format = raw.format.unwrap_or(CookieFormat::Sealed);
        let keys = match raw.keys {
            Some(_) if format != CookieFormat::Sealed => {
                return Err(ConfigError::new(
                    "cookie.keys",
                    "keys are only used by the `sealed` format",
                ))
            }
            Some(list) => parse_keys("cookie.keys", &list)?,
            None => Vec::new(),
        };
        let path = raw.path.unwrap_or_else(|| "/".to_string());
        check_attribute("cookie.path", &path)?;
        if !path.starts_with('/') {
            return Err(ConfigError::new("cookie.path", "must start with `/`"));
        }
        if let Some(domain) = &raw.domain {
            check_attribute("cookie.domain", domain)?;
        }
        let same_site = raw.same_site;
        let secure = raw.secure.unwrap_or(false);
        if same_site == Some(SameSite::None) && !secure {
            return Err(ConfigError::new(
                "cookie.same_site",
                "`None` requires `secure: true` (browsers drop the cookie otherwise)",
            ));
        }
        let max_age = match raw.max_age {
            None => None,
            Some(d) if d.0.as_secs() == 0 => {
                return Err(ConfigError::new(
                    "cookie.max_age",
                    "must be at least one second (leave it out for a session cookie)",
                ))
            }
            Some(d) => Some(d.0),
        };
        let ingress_nginx = match (format, raw.ingress_nginx) {
            (CookieFormat::IngressNginx, section) => Some(section.unwrap_or_default().validate()?),
            (_, Some(_)) => {
                return Err(ConfigError::new(
                    "cookie.ingress_nginx",
                    "only for format `ingress_nginx`",
                ))
            }
            (_, None) => None,
        };
        Ok(CookieConfig {
            name,
            format,
            keys,
            path,
            domain: raw.domain,
            secure,
            http_only: raw.http_only.unwrap_or(true),
            same_site,
            max_age,
            always_send: raw.always_send.unwrap_or(false),
            ingress_nginx,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Kind};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn ingress_nginx_section() {
        let c = Config::parse(
            br#"{"type":"http_cookie","cookie":{"format":"ingress_nginx","ingress_nginx":{"backend":"ns-web-80","endpoints":["10.0.0.1:80","[fd00::1]:80"]}}}"#,
        )
        .unwrap();
        let Kind::HttpCookie(k) = c.kind else {
            panic!()
        };
        let i = k.ingress_nginx.unwrap();
        assert_eq!((i.backend.as_str(), i.endpoints.len()), ("ns-web-80", 2));
        for (json, field) in [
            (
                r#"{"format":"ingress_nginx"}"#,
                "cookie.ingress_nginx.backend",
            ),
            (
                r#"{"format":"ingress_nginx","ingress_nginx":{"backend":""}}"#,
                "cookie.ingress_nginx.backend",
            ),
            (
                r#"{"format":"ingress_nginx","ingress_nginx":{"backend":"a","endpoints":["x"]}}"#,
                "cookie.ingress_nginx.endpoints[0]",
            ),
            (
                r#"{"format":"ingress_nginx","ingress_nginx":{"backend":"a","endpoints":["1.1.1.1:1","1.1.1.1:1"]}}"#,
                "cookie.ingress_nginx.endpoints[1]",
            ),
            (
                r#"{"format":"ingress_nginx","ingress_nginx":{"backend":"a","salt":"b"}}"#,
                "cookie.ingress_nginx.salt",
            ),
            (
                r#"{"ingress_nginx":{"backend":"a"}}"#,
                "cookie.ingress_nginx",
            ),
            (
                r#"{"format":"ingress_nginx","keys":["AAAA"],"ingress_nginx":{"backend":"a"}}"#,
                "cookie.keys",
            ),
        ] {
            let json = format!(r#"{{"type":"http_cookie","cookie":{json}}}"#);
            assert_eq!(
                Config::parse(json.as_bytes()).unwrap_err().field,
                field,
                "{json}"
            );
        }
    }
}
