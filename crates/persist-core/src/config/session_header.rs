//! The `session_header` section (`session_header` type, README "session_header"): the sealed
//! token of `http_cookie`, carried in a header instead of a cookie.

use super::cookie::parse_keys;
use super::{own_header_name, ConfigError};
use serde::Deserialize;

/// Default carrier header.
pub const DEFAULT_SESSION_HEADER: &str = "x-persist-session";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSessionHeader {
    name: Option<String>,
    keys: Option<Vec<String>>,
    always_send: Option<bool>,
}

/// A validated `session_header` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionHeaderConfig {
    /// The request header the client sends the token in, and the response header it is
    /// sent in (lower-case).
    pub name: String,
    /// Configured sealing keys; empty means "generate one per Envoy process".
    pub keys: Vec<[u8; 32]>,
    pub always_send: bool,
}

/// Headers a token cannot ride in: the hop-by-hop and framing headers, the cookie headers
/// and the pseudo-header-like names Envoy owns.
const RESERVED: &[&str] = &[
    "cookie",
    "set-cookie",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

impl RawSessionHeader {
    pub(super) fn validate(self) -> Result<SessionHeaderConfig, ConfigError> {
        let name = own_header_name(
            "session_header.name",
            self.name,
            DEFAULT_SESSION_HEADER,
            |h| RESERVED.contains(&h) || h.starts_with("grpc-"),
        )?;
        let keys = match self.keys {
            Some(list) => parse_keys("session_header.keys", &list)?,
            None => Vec::new(),
        };
        Ok(SessionHeaderConfig {
            name,
            keys,
            always_send: self.always_send.unwrap_or(false),
        })
    }
}
