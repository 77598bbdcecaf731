//! The `mirror` section (README "More than one Envoy"): raw serde shape and its
//! validation.

use super::{ConfigDuration, ConfigError};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMirror {
    cluster: Option<String>,
    prefix: Option<String>,
    timeout: Option<ConfigDuration>,
}

/// A validated `mirror` section (README "More than one Envoy"): the table mirrored through etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// The Envoy cluster (HTTP/2) whose endpoints are the etcd members.
    pub cluster: String,
    /// etcd key prefix; the profile's keys are `<prefix><profile>/<hash>`.
    pub prefix: String,
    /// The longest a request waits for etcd.
    pub timeout: Duration,
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
        Ok(MirrorConfig {
            cluster,
            prefix,
            timeout,
        })
    }
}
