//! The sections of the locally stored types (SPEC 2.2) and of `consistent_hash` (SPEC 2.3):
//! raw serde shapes and their validation into the types the filter uses.

use super::{check_token, ConfigError};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Where a key is read from (`custom.source`, `hash.source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A request header's value.
    Header(String),
    /// A request cookie's value.
    Cookie(String),
    /// A query parameter's value (raw, not percent-decoded).
    Query(String),
    /// A host property, e.g. dynamic metadata another filter set.
    Property(Vec<String>),
    /// The client address Envoy computed (`source.address`), without the port.
    ClientIp,
    /// The request path without its query string.
    Path,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCookieConfig {
    pub name: String,
    pub query_parameter: Option<String>,
    pub learn_from_request: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderConfig {
    /// Lower-cased header name.
    pub name: String,
    /// Static value → server map; always wins over the table.
    pub servers: HashMap<Vec<u8>, SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIpConfig {
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsKey {
    /// The session ID, from this request header (filled by Envoy's header_mutation filter).
    SessionId { header: String },
    /// `connection.sha256_peer_certificate_digest` (mTLS clients).
    PeerCertificate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashConfig {
    pub source: Source,
    /// Lower-cased request header the route's `hash_policy` reads.
    pub header: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAppCookie {
    name: Option<String>,
    query_parameter: Option<String>,
    learn_from_request: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeader {
    name: Option<String>,
    servers: Option<HashMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientIp {
    ipv4_prefix: Option<u8>,
    ipv6_prefix: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawTlsKey {
    SessionId,
    PeerCertificate,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    key: Option<RawTlsKey>,
    session_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    header: Option<String>,
    cookie: Option<String>,
    query: Option<String>,
    property: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCustom {
    source: Option<RawSource>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawHashSource {
    Named(String),
    Object(RawSource),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHash {
    source: Option<RawHashSource>,
    header: Option<String>,
}

fn header_name(field: &str, value: String) -> Result<String, ConfigError> {
    let value = value.to_ascii_lowercase();
    check_token(field, &value)?;
    Ok(value)
}

impl RawAppCookie {
    pub(super) fn validate(self) -> Result<AppCookieConfig, ConfigError> {
        let name = self.name.unwrap_or_else(|| "JSESSIONID".to_string());
        check_token("app_cookie.name", &name)?;
        if let Some(q) = &self.query_parameter {
            check_token("app_cookie.query_parameter", q)?;
        }
        Ok(AppCookieConfig {
            name,
            query_parameter: self.query_parameter,
            learn_from_request: self.learn_from_request.unwrap_or(false),
        })
    }
}

impl RawHeader {
    pub(super) fn validate(self) -> Result<HeaderConfig, ConfigError> {
        let name = self
            .name
            .ok_or_else(|| ConfigError::new("header.name", "required for type http_header"))?;
        let name = header_name("header.name", name)?;
        let mut servers = HashMap::new();
        for (value, addr) in self.servers.unwrap_or_default() {
            let field = format!("header.servers.{value}");
            let parsed: SocketAddr = addr
                .parse()
                .map_err(|_| ConfigError::new(&field, format!("`{addr}` is not ip:port")))?;
            servers.insert(value.into_bytes(), parsed);
        }
        Ok(HeaderConfig { name, servers })
    }
}

impl RawClientIp {
    pub(super) fn validate(self) -> Result<ClientIpConfig, ConfigError> {
        let ipv4_prefix = self.ipv4_prefix.unwrap_or(32);
        if !(1..=32).contains(&ipv4_prefix) {
            return Err(ConfigError::new("client_ip.ipv4_prefix", "must be 1 to 32"));
        }
        let ipv6_prefix = self.ipv6_prefix.unwrap_or(128);
        if !(1..=128).contains(&ipv6_prefix) {
            return Err(ConfigError::new(
                "client_ip.ipv6_prefix",
                "must be 1 to 128",
            ));
        }
        Ok(ClientIpConfig {
            ipv4_prefix,
            ipv6_prefix,
        })
    }
}

impl RawTls {
    pub(super) fn validate(self) -> Result<TlsKey, ConfigError> {
        match self.key.unwrap_or(RawTlsKey::SessionId) {
            RawTlsKey::SessionId => {
                let header = self
                    .session_header
                    .unwrap_or_else(|| "x-tls-session-id".to_string());
                Ok(TlsKey::SessionId {
                    header: header_name("tls.session_header", header)?,
                })
            }
            RawTlsKey::PeerCertificate => match self.session_header {
                Some(_) => Err(ConfigError::new(
                    "tls.session_header",
                    "only used with `key: session_id`",
                )),
                None => Ok(TlsKey::PeerCertificate),
            },
        }
    }
}

impl RawSource {
    fn validate(self, field: &str) -> Result<Source, ConfigError> {
        let given = [
            self.header.is_some(),
            self.cookie.is_some(),
            self.query.is_some(),
            self.property.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ConfigError::new(
                field,
                "give exactly one of `header`, `cookie`, `query`, `property`",
            ));
        }
        if let Some(h) = self.header {
            return Ok(Source::Header(header_name(&format!("{field}.header"), h)?));
        }
        if let Some(c) = self.cookie {
            check_token(&format!("{field}.cookie"), &c)?;
            return Ok(Source::Cookie(c));
        }
        if let Some(q) = self.query {
            check_token(&format!("{field}.query"), &q)?;
            return Ok(Source::Query(q));
        }
        let path = self.property.unwrap_or_default();
        if path.is_empty() || path.len() > 16 || path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::new(
                &format!("{field}.property"),
                "give 1 to 16 non-empty path segments",
            ));
        }
        Ok(Source::Property(path))
    }
}

impl RawCustom {
    pub(super) fn validate(self) -> Result<Source, ConfigError> {
        self.source
            .ok_or_else(|| ConfigError::new("custom.source", "required for type custom"))?
            .validate("custom.source")
    }
}

impl RawHash {
    pub(super) fn validate(self) -> Result<HashConfig, ConfigError> {
        let source = match self.source {
            None => {
                return Err(ConfigError::new(
                    "hash.source",
                    "required for type consistent_hash",
                ))
            }
            Some(RawHashSource::Named(n)) => match n.as_str() {
                "client_ip" => Source::ClientIp,
                "path" => Source::Path,
                _ => {
                    return Err(ConfigError::new(
                        "hash.source",
                        format!("`{n}`: use \"client_ip\", \"path\" or a source object"),
                    ))
                }
            },
            Some(RawHashSource::Object(o)) => o.validate("hash.source")?,
        };
        let header = header_name(
            "hash.header",
            self.header.unwrap_or_else(|| "x-persist-hash".to_string()),
        )?;
        Ok(HashConfig { source, header })
    }
}
