//! The `clusters` section (README "Weighted clusters", SPEC §2.6): the clusters of a
//! `weighted_clusters` route a profile may hand a client back to, and the request header
//! that names one to the route (`cluster_header`).

use super::{check_token, own_header_name, ConfigError};
use serde::Deserialize;

/// Default header a route's `cluster_header` reads.
pub const DEFAULT_CLUSTER_HEADER: &str = "x-persist-cluster";
/// Most clusters one profile may name.
pub const MAX_CLUSTERS: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClusters {
    header: Option<String>,
    allow: Option<Vec<String>>,
}

/// What a persistence records of a cluster: 32 bits of FNV-1a of its name, never 0 (0 is
/// "no cluster recorded"). The same name has the same tag on every Envoy and in every
/// revision of the allow-list, so a cookie or entry outlives edits of the list; a tag no
/// allowed name has (a cluster taken off the list) names nothing.
pub fn cluster_tag(name: &[u8]) -> u32 {
    let h = name.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    h.max(1)
}

/// A validated `clusters` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clusters {
    /// The request header the filter writes the persisted cluster into (lower-case).
    pub header: String,
    /// The allowed cluster names with their tags, in configuration order.
    allowed: Vec<(u32, String)>,
}

impl Clusters {
    /// The allowed cluster recorded as `tag`, if it is still allowed.
    pub fn name(&self, tag: u32) -> Option<&str> {
        self.allowed
            .iter()
            .find(|(t, _)| *t == tag && tag != 0)
            .map(|(_, n)| n.as_str())
    }

    /// The tag of `name` when it is an allowed cluster; 0 otherwise (nothing recorded).
    pub fn tag_of(&self, name: &[u8]) -> u32 {
        self.allowed
            .iter()
            .find(|(_, n)| n.as_bytes() == name)
            .map_or(0, |(t, _)| *t)
    }

    /// The allowed names, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.allowed.iter().map(|(_, n)| n.as_str())
    }
}

/// Request headers the cluster cannot ride in.
const RESERVED: &[&str] = &[
    "cookie",
    "set-cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

impl RawClusters {
    pub(super) fn validate(self) -> Result<Clusters, ConfigError> {
        let header = own_header_name(
            "clusters.header",
            self.header,
            DEFAULT_CLUSTER_HEADER,
            |h| RESERVED.contains(&h),
        )?;
        let names = self.allow.unwrap_or_default();
        if names.is_empty() || names.len() > MAX_CLUSTERS {
            return Err(ConfigError::new(
                "clusters.allow",
                format!(
                    "give 1 to {MAX_CLUSTERS} cluster names: the clusters of the weighted route"
                ),
            ));
        }
        let mut allowed: Vec<(u32, String)> = Vec::with_capacity(names.len());
        for (i, name) in names.into_iter().enumerate() {
            let field = format!("clusters.allow[{i}]");
            // A token: it rides in a header and in the mirror's space-separated records.
            check_token(&field, &name)?;
            let tag = cluster_tag(name.as_bytes());
            if let Some((_, other)) = allowed.iter().find(|(t, _)| *t == tag) {
                let why = if *other == name {
                    format!("`{name}` is listed twice")
                } else {
                    format!("`{name}` and `{other}` have the same 32-bit tag; rename one")
                };
                return Err(ConfigError::new(&field, why));
            }
            allowed.push((tag, name));
        }
        Ok(Clusters { header, allowed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn parse(json: &str) -> Result<Clusters, ConfigError> {
        serde_json::from_str::<RawClusters>(json)
            .unwrap()
            .validate()
    }

    #[test]
    fn tags_are_fnv1a_and_never_zero() {
        // FNV-1a 32 reference values.
        assert_eq!(cluster_tag(b""), 0x811c_9dc5);
        assert_eq!(cluster_tag(b"a"), 0xe40c_292c);
        assert_eq!(cluster_tag(b"foobar"), 0xbf9c_f968);
        let c = parse(r#"{"allow":["blue","green"]}"#).unwrap();
        assert_eq!(c.header, DEFAULT_CLUSTER_HEADER);
        let blue = cluster_tag(b"blue");
        assert_eq!(c.tag_of(b"blue"), blue);
        assert_eq!(c.name(blue), Some("blue"));
        assert_eq!(c.tag_of(b"red"), 0);
        assert_eq!(c.name(cluster_tag(b"red")), None);
        assert_eq!(c.name(0), None);
        assert_eq!(c.names().collect::<Vec<_>>(), ["blue", "green"]);
    }

    #[test]
    fn refusals_name_the_field() {
        for (json, field) in [
            (r#"{}"#, "clusters.allow"),
            (r#"{"allow":[]}"#, "clusters.allow"),
            (r#"{"allow":["a b"]}"#, "clusters.allow[0]"),
            (r#"{"allow":["a",""]}"#, "clusters.allow[1]"),
            (r#"{"allow":["a","a"]}"#, "clusters.allow[1]"),
            (r#"{"allow":["a"],"header":"cookie"}"#, "clusters.header"),
            (r#"{"allow":["a"],"header":"x y"}"#, "clusters.header"),
        ] {
            assert_eq!(parse(json).unwrap_err().field, field, "{json}");
        }
        let many: Vec<String> = (0..=MAX_CLUSTERS).map(|i| format!("c{i}")).collect();
        let json = serde_json::json!({ "allow": many }).to_string();
        assert_eq!(parse(&json).unwrap_err().field, "clusters.allow");
        // Istio's cluster names are tokens too.
        parse(r#"{"allow":["outbound|80|blue|app.ns.svc.cluster.local"]}"#).unwrap();
    }
}
