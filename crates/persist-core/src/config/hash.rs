//! The `hash` section (`consistent_hash`, README "consistent_hash"): raw serde shape and
//! its validation.

use super::source::{RawSource, Source};
use super::{header_name, ConfigError};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashConfig {
    pub source: Source,
    /// Lower-cased request header the route's `hash_policy` reads.
    pub header: String,
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
