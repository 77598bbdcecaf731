//! The sections of the locally stored types (README "Locally stored types"): raw serde
//! shapes and their validation into the types the filter uses.

use super::source::{RawSource, Source};
use super::{check_token, header_name, ConfigError};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;

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
pub(super) struct RawCustom {
    source: Option<RawSource>,
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

impl RawCustom {
    pub(super) fn validate(self) -> Result<Source, ConfigError> {
        self.source
            .ok_or_else(|| ConfigError::new("custom.source", "required for type custom"))?
            .validate("custom.source")
    }
}
