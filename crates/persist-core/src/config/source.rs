//! Where a key is read from (`custom.source`, `hash.source`; README "custom"): raw serde
//! shape and its validation.

use super::{check_token, header_name, ConfigError};
use serde::Deserialize;

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    header: Option<String>,
    cookie: Option<String>,
    query: Option<String>,
    property: Option<Vec<String>>,
}

impl RawSource {
    pub(super) fn validate(self, field: &str) -> Result<Source, ConfigError> {
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
