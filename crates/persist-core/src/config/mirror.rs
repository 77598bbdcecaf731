//! The `mirror` section (README "More than one Envoy"): raw serde shape and its
//! validation.

use super::{ConfigDuration, ConfigError};
use base64::Engine;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMirror {
    cluster: Option<String>,
    prefix: Option<String>,
    timeout: Option<ConfigDuration>,
    secret: Option<String>,
}

/// A validated `mirror` section (README "More than one Envoy"): the table mirrored through etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// The Envoy cluster (HTTP/2) whose endpoints are the etcd members.
    pub cluster: String,
    /// etcd key prefix; the profile's keys are `<prefix><profile>/<secret id>/<mac>`.
    pub prefix: String,
    /// The longest a request waits for etcd.
    pub timeout: Duration,
    /// The secret of the keyed hash, the same on every Envoy of the profile
    /// ([`crate::table::secret`]).
    pub secret: [u8; 32],
}

impl RawMirror {
    pub(super) fn validate(self) -> Result<MirrorConfig, ConfigError> {
        let cluster = self
            .cluster
            .ok_or_else(|| ConfigError::new("mirror.cluster", "required: the etcd cluster"))?;
        if cluster.is_empty() || cluster.len() > 256 {
            return Err(ConfigError::new(
                "mirror.cluster",
                "give the name of an Envoy cluster (1 to 256 characters)",
            ));
        }
        let prefix = self.prefix.unwrap_or_else(|| "/persist/".to_string());
        if prefix.is_empty() || prefix.len() > 256 {
            return Err(ConfigError::new(
                "mirror.prefix",
                "give a non-empty etcd key prefix of at most 256 bytes",
            ));
        }
        let timeout = self.timeout.map_or(Duration::from_millis(50), |d| d.0);
        if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(10) {
            return Err(ConfigError::new(
                "mirror.timeout",
                "must be between 1ms and 10s",
            ));
        }
        let secret = decode_secret("mirror.secret", self.secret.as_deref())?;
        Ok(MirrorConfig {
            cluster,
            prefix,
            timeout,
            secret,
        })
    }
}

/// `mirror.secret`: required, since every Envoy of the profile must hash client keys alike.
fn decode_secret(field: &str, text: Option<&str>) -> Result<[u8; 32], ConfigError> {
    let text = text.ok_or_else(|| {
        ConfigError::new(
            field,
            "required with `mirror`: 32 random bytes in base64 (e.g. `head -c 32 /dev/urandom \
             | base64`), the same on every Envoy of the profile",
        )
    })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| ConfigError::new(field, "not base64"))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| ConfigError::new(field, format!("must be 32 bytes, is {} bytes", bytes.len())))
}
