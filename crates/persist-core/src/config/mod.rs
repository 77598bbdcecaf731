//! The plugin configuration (README "Configuration reference"): parsed strictly, validated completely, and turned into
//! a [`Config`] the filter can use without further checks. Every error names its field.

mod clusters;
mod cookie;
mod duration;
mod hash;
mod mirror;
mod session_header;
mod source;
mod table;

pub use clusters::{cluster_tag, Clusters, DEFAULT_CLUSTER_HEADER, MAX_CLUSTERS};
pub use cookie::{
    CookieConfig, CookieFormat, IngressNginxConfig, SameSite, MAX_INGRESS_ENDPOINTS, MAX_KEYS,
};
pub use duration::{parse_duration, ConfigDuration};
pub use hash::HashConfig;
pub use mirror::MirrorConfig;
pub use session_header::{SessionHeaderConfig, DEFAULT_SESSION_HEADER};
pub use source::Source;
pub use table::{AppCookieConfig, ClientIpConfig, HeaderConfig, TlsKey};

use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A configuration error: the field (dotted path) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &str, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// How the chosen server is handed to Envoy (README "How it works").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handoff {
    /// base64 `ip:port` for `envoy.filters.http.stateful_session` (header session state).
    StatefulSession,
    /// plain `ip:port` for the `envoy.load_balancing_policies.override_host` LB policy.
    OverrideHost,
}

/// Persistence types (README "Configuration reference").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersistType {
    HttpCookie,
    SessionHeader,
    AppCookie,
    HttpHeader,
    ClientIp,
    Tls,
    Custom,
    ConsistentHash,
}

impl PersistType {
    pub fn as_str(self) -> &'static str {
        match self {
            PersistType::HttpCookie => "http_cookie",
            PersistType::SessionHeader => "session_header",
            PersistType::AppCookie => "app_cookie",
            PersistType::HttpHeader => "http_header",
            PersistType::ClientIp => "client_ip",
            PersistType::Tls => "tls",
            PersistType::Custom => "custom",
            PersistType::ConsistentHash => "consistent_hash",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: PersistType,
    handoff: Option<Handoff>,
    upstream_header: Option<String>,
    timeout: Option<ConfigDuration>,
    absolute_timeout: Option<ConfigDuration>,
    suspect_for: Option<ConfigDuration>,
    max_entries: Option<u64>,
    strict: Option<bool>,
    access_log_state: Option<bool>,
    cookie: Option<cookie::RawCookie>,
    session_header: Option<session_header::RawSessionHeader>,
    app_cookie: Option<table::RawAppCookie>,
    header: Option<table::RawHeader>,
    client_ip: Option<table::RawClientIp>,
    tls: Option<table::RawTls>,
    custom: Option<table::RawCustom>,
    hash: Option<hash::RawHash>,
    mirror: Option<mirror::RawMirror>,
    clusters: Option<clusters::RawClusters>,
}

/// Type-specific settings of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Client stored (README "Cookie formats and migration").
    HttpCookie(CookieConfig),
    /// Client stored, in a header (README "session_header").
    SessionHeader(SessionHeaderConfig),
    /// Locally stored (README "Locally stored types"): the key of each request maps to a server in the table.
    AppCookie(AppCookieConfig),
    HttpHeader(HeaderConfig),
    ClientIp(ClientIpConfig),
    Tls(TlsKey),
    Custom(Source),
    /// README "consistent_hash": a key for Envoy's ring_hash / maglev; nothing stored.
    ConsistentHash(HashConfig),
}

impl Kind {
    /// The `type` this kind is configured with.
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::HttpCookie(_) => PersistType::HttpCookie,
            Kind::SessionHeader(_) => PersistType::SessionHeader,
            Kind::AppCookie(_) => PersistType::AppCookie,
            Kind::HttpHeader(_) => PersistType::HttpHeader,
            Kind::ClientIp(_) => PersistType::ClientIp,
            Kind::Tls(_) => PersistType::Tls,
            Kind::Custom(_) => PersistType::Custom,
            Kind::ConsistentHash(_) => PersistType::ConsistentHash,
        }
        .as_str()
    }

    /// Whether this type keeps its bindings in the local persistence table.
    pub fn uses_table(&self) -> bool {
        !matches!(
            self,
            Kind::HttpCookie(_) | Kind::SessionHeader(_) | Kind::ConsistentHash(_)
        )
    }
}

/// A validated profile configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub name: String,
    pub kind: Kind,
    pub handoff: Handoff,
    pub upstream_header: String,
    pub timeout: Duration,
    pub absolute_timeout: Option<Duration>,
    pub suspect_for: Duration,
    pub max_entries: u64,
    /// When the persisted server cannot be used, answer 503 instead of letting the load
    /// balancer choose another. Only a host that names the server itself (the native
    /// module's upstream override) can honour it; under the wasm module strict mode is the
    /// `strict` of the stateful_session filter (README "Native module (dynamic module)").
    pub strict: bool,
    /// Set the request's decision and the profile's type as filter state for the access
    /// log (README "Access logs and dashboards"): two host calls per request.
    pub access_log_state: bool,
    /// README "More than one Envoy": locally stored types only.
    pub mirror: Option<MirrorConfig>,
    /// README "Weighted clusters": the clusters a client is handed back to.
    pub clusters: Option<Clusters>,
}

impl Config {
    /// Parses and validates the plugin configuration JSON.
    pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let at_root = path == "." || path == "?" || path.is_empty();
            // serde reports a missing field at its parent: name the field itself.
            let missing = inner
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let field = match (missing, at_root) {
                (Some(m), true) => m.to_string(),
                (Some(m), false) => format!("{path}.{m}"),
                (None, true) => "(root)".to_string(),
                (None, false) => path,
            };
            ConfigError::new(&field, inner)
        })?;
        de.end()
            .map_err(|e| ConfigError::new("(root)", e.to_string()))?;
        raw.validate()
    }
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// A header name field: lower-cased, a valid HTTP token.
pub(super) fn header_name(field: &str, value: String) -> Result<String, ConfigError> {
    let value = value.to_ascii_lowercase();
    check_token(field, &value)?;
    Ok(value)
}

/// A header name field the filter writes its own value in: [`header_name`], `default` when
/// absent, refused when `reserved` says the value cannot ride in that header.
pub(super) fn own_header_name(
    field: &str,
    value: Option<String>,
    default: &str,
    reserved: impl Fn(&str) -> bool,
) -> Result<String, ConfigError> {
    let name = header_name(field, value.unwrap_or_else(|| default.to_string()))?;
    if reserved(&name) {
        return Err(ConfigError::new(
            field,
            format!("`{name}` is a reserved header"),
        ));
    }
    Ok(name)
}

pub(crate) fn check_token(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 256 || !value.bytes().all(is_token_char) {
        return Err(ConfigError::new(
            field,
            format!("`{value}` is not a valid HTTP token"),
        ));
    }
    Ok(())
}

fn positive(
    field: &str,
    d: Option<ConfigDuration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let d = d.map(|d| d.0).unwrap_or(default);
    if d.is_zero() {
        return Err(ConfigError::new(field, "must be greater than zero"));
    }
    Ok(d)
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let name = self.name.unwrap_or_else(|| "default".to_string());
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        {
            return Err(ConfigError::new(
                "name",
                format!("`{name}`: use 1 to 64 letters, digits, `_` or `-`"),
            ));
        }
        let upstream_header = self
            .upstream_header
            .unwrap_or_else(|| "x-persist-upstream".to_string())
            .to_ascii_lowercase();
        check_token("upstream_header", &upstream_header)?;
        if matches!(
            upstream_header.as_str(),
            "cookie"
                | "set-cookie"
                | "host"
                | "content-length"
                | "transfer-encoding"
                | "connection"
        ) {
            return Err(ConfigError::new(
                "upstream_header",
                format!("`{upstream_header}` is a reserved header"),
            ));
        }
        let timeout = positive("timeout", self.timeout, Duration::from_secs(20 * 60))?;
        let absolute_timeout = match self.absolute_timeout {
            None => None,
            Some(d) => Some(positive("absolute_timeout", Some(d), Duration::ZERO)?),
        };
        let suspect_for = self
            .suspect_for
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10));
        let max_entries = self.max_entries.unwrap_or(100_000);
        if max_entries == 0 {
            return Err(ConfigError::new("max_entries", "must be at least 1"));
        }

        let kind = self.kind;
        let sections = [
            ("cookie", self.cookie.is_some(), PersistType::HttpCookie),
            (
                "session_header",
                self.session_header.is_some(),
                PersistType::SessionHeader,
            ),
            (
                "app_cookie",
                self.app_cookie.is_some(),
                PersistType::AppCookie,
            ),
            ("header", self.header.is_some(), PersistType::HttpHeader),
            ("client_ip", self.client_ip.is_some(), PersistType::ClientIp),
            ("tls", self.tls.is_some(), PersistType::Tls),
            ("custom", self.custom.is_some(), PersistType::Custom),
            ("hash", self.hash.is_some(), PersistType::ConsistentHash),
        ];
        for (field, given, owner) in sections {
            if given && owner != kind {
                return Err(ConfigError::new(
                    field,
                    format!("only for type {}", owner.as_str()),
                ));
            }
        }
        let kind = match kind {
            PersistType::HttpCookie => {
                Kind::HttpCookie(self.cookie.unwrap_or_default().validate()?)
            }
            PersistType::SessionHeader => {
                let sh = self.session_header.unwrap_or_default().validate()?;
                if sh.name == upstream_header {
                    return Err(ConfigError::new(
                        "session_header.name",
                        "must differ from upstream_header",
                    ));
                }
                Kind::SessionHeader(sh)
            }
            PersistType::AppCookie => Kind::AppCookie(
                self.app_cookie
                    .map(|a| a.validate())
                    .unwrap_or_else(|| table::RawAppCookie::default().validate())?,
            ),
            PersistType::HttpHeader => Kind::HttpHeader(
                self.header
                    .ok_or_else(|| {
                        ConfigError::new("header.name", "required for type http_header")
                    })?
                    .validate()?,
            ),
            PersistType::ClientIp => Kind::ClientIp(
                self.client_ip
                    .map(|c| c.validate())
                    .unwrap_or_else(|| table::RawClientIp::default().validate())?,
            ),
            PersistType::Tls => Kind::Tls(
                self.tls
                    .map(|t| t.validate())
                    .unwrap_or_else(|| table::RawTls::default().validate())?,
            ),
            PersistType::Custom => Kind::Custom(
                self.custom
                    .ok_or_else(|| ConfigError::new("custom.source", "required for type custom"))?
                    .validate()?,
            ),
            PersistType::ConsistentHash => {
                let hash = self
                    .hash
                    .ok_or_else(|| {
                        ConfigError::new("hash.source", "required for type consistent_hash")
                    })?
                    .validate()?;
                if hash.header == upstream_header {
                    return Err(ConfigError::new(
                        "hash.header",
                        "must differ from upstream_header",
                    ));
                }
                Kind::ConsistentHash(hash)
            }
        };
        let mirror = match self.mirror {
            None => None,
            Some(_) if !kind.uses_table() => {
                return Err(ConfigError::new(
                    "mirror",
                    "only the locally stored types (app_cookie, http_header, client_ip, tls, \
                     custom) keep a table to mirror",
                ))
            }
            Some(m) => Some(m.validate()?),
        };
        let clusters = match self.clusters {
            None => None,
            Some(c) => Some(clusters_for(&kind, &upstream_header, c.validate()?)?),
        };
        Ok(Config {
            name,
            kind,
            handoff: self.handoff.unwrap_or(Handoff::StatefulSession),
            upstream_header,
            timeout,
            absolute_timeout,
            suspect_for,
            max_entries,
            strict: self.strict.unwrap_or(false),
            access_log_state: self.access_log_state.unwrap_or(true),
            mirror,
            clusters,
        })
    }
}

/// `clusters` is for the kinds that record a binding, in a form that can carry the cluster,
/// and its header must be one no other part of the profile reads or writes.
fn clusters_for(
    kind: &Kind,
    upstream_header: &str,
    clusters: Clusters,
) -> Result<Clusters, ConfigError> {
    let taken = match kind {
        Kind::ConsistentHash(_) => {
            return Err(ConfigError::new(
                "clusters",
                "not for type consistent_hash: it records nothing; give the weighted route a \
                 hash_policy instead",
            ))
        }
        Kind::HttpCookie(c) if c.format != CookieFormat::Sealed => {
            return Err(ConfigError::new(
                "clusters",
                format!(
                    "needs cookie.format sealed: the {} format cannot record a cluster",
                    c.format.as_str()
                ),
            ))
        }
        Kind::SessionHeader(sh) => Some(sh.name.as_str()),
        Kind::HttpHeader(h) => Some(h.name.as_str()),
        _ => None,
    };
    if clusters.header == upstream_header || Some(clusters.header.as_str()) == taken {
        return Err(ConfigError::new(
            "clusters.header",
            format!("`{}` is already used by this profile", clusters.header),
        ));
    }
    Ok(clusters)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn err(json: &str) -> ConfigError {
        Config::parse(json.as_bytes()).unwrap_err()
    }

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn defaults() {
        let c = Config::parse(br#"{"type":"http_cookie"}"#).unwrap();
        assert_eq!(c.name, "default");
        assert_eq!(c.handoff, Handoff::StatefulSession);
        assert_eq!(c.upstream_header, "x-persist-upstream");
        assert_eq!(c.timeout, Duration::from_secs(1200));
        assert_eq!(c.absolute_timeout, None);
        assert_eq!(c.suspect_for, Duration::from_secs(10));
        assert_eq!(c.max_entries, 100_000);
        assert!(!c.strict);
        let Kind::HttpCookie(k) = c.kind else {
            panic!()
        };
        assert_eq!(k.name, "persist");
        assert_eq!(k.format, CookieFormat::Sealed);
        assert!(k.keys.is_empty());
        assert_eq!(k.path, "/");
        assert_eq!(k.domain, None);
        assert!(!k.secure);
        assert!(k.http_only);
        assert_eq!(k.same_site, None);
        assert_eq!(k.max_age, None);
        assert!(!k.always_send);
    }

    #[test]
    fn full() {
        let json = format!(
            r#"{{"name":"web","type":"http_cookie","handoff":"override_host","upstream_header":"X-Up",
            "timeout":"90s","absolute_timeout":"12h","suspect_for":0,"max_entries":5,"strict":true,
            "cookie":{{"name":"SRV","format":"sealed","keys":["{KEY}"],"path":"/app","domain":"example.com",
            "secure":true,"http_only":false,"same_site":"Strict","max_age":"7d","always_send":true}}}}"#
        );
        let c = Config::parse(json.as_bytes()).unwrap();
        assert_eq!(c.upstream_header, "x-up");
        assert_eq!(c.handoff, Handoff::OverrideHost);
        assert_eq!(c.suspect_for, Duration::ZERO);
        assert!(c.strict);
        assert_eq!(c.absolute_timeout, Some(Duration::from_secs(43200)));
        let Kind::HttpCookie(k) = c.kind else {
            panic!()
        };
        assert_eq!(k.keys.len(), 1);
        assert_eq!(k.keys[0][31], 31);
        assert_eq!(k.same_site, Some(SameSite::Strict));
        assert_eq!(k.max_age, Some(Duration::from_secs(604800)));
    }

    #[test]
    fn mirror_defaults_and_values() {
        let c = Config::parse(
            br#"{"type":"client_ip","mirror":{"cluster":"etcd","secret":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}}"#,
        )
        .unwrap();
        assert_eq!(
            c.mirror,
            Some(MirrorConfig {
                cluster: "etcd".into(),
                prefix: "/persist/".into(),
                timeout: Duration::from_millis(50),
                secret: [1; 32],
            })
        );
        let c = Config::parse(
            br#"{"type":"app_cookie","mirror":{"cluster":"kv","prefix":"/lb/","timeout":"200ms",
                 "secret":" AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI= "}}"#,
        )
        .unwrap();
        let m = c.mirror.unwrap();
        assert_eq!(
            (m.prefix.as_str(), m.timeout, m.secret),
            ("/lb/", Duration::from_millis(200), [2; 32])
        );
        assert_eq!(Config::parse(br#"{"type":"tls"}"#).unwrap().mirror, None);
    }

    #[test]
    fn locally_stored_types() {
        let c = Config::parse(br#"{"type":"app_cookie"}"#).unwrap();
        assert!(c.kind.uses_table());
        assert_eq!(
            c.kind,
            Kind::AppCookie(AppCookieConfig {
                name: "JSESSIONID".into(),
                query_parameter: None,
                learn_from_request: false
            })
        );
        let c = Config::parse(
            br#"{"type":"http_header","header":{"name":"X-User","servers":{"alice":"10.0.0.1:80"}}}"#,
        )
        .unwrap();
        let Kind::HttpHeader(h) = c.kind else {
            panic!()
        };
        assert_eq!(h.name, "x-user");
        assert_eq!(
            h.servers.get(&b"alice"[..]),
            Some(&"10.0.0.1:80".parse().unwrap())
        );
        let c = Config::parse(br#"{"type":"client_ip"}"#).unwrap();
        assert_eq!(
            c.kind,
            Kind::ClientIp(ClientIpConfig {
                ipv4_prefix: 32,
                ipv6_prefix: 128
            })
        );
        let c = Config::parse(br#"{"type":"tls"}"#).unwrap();
        assert_eq!(
            c.kind,
            Kind::Tls(TlsKey::SessionId {
                header: "x-tls-session-id".into()
            })
        );
        let c = Config::parse(
            br#"{"type":"custom","custom":{"source":{"property":["metadata","filter_metadata","envoy.filters.http.lua","k"]}}}"#,
        )
        .unwrap();
        assert!(matches!(c.kind, Kind::Custom(Source::Property(ref p)) if p.len() == 4));
        let c =
            Config::parse(br#"{"type":"consistent_hash","hash":{"source":"client_ip"}}"#).unwrap();
        assert!(!c.kind.uses_table());
        assert_eq!(
            c.kind,
            Kind::ConsistentHash(HashConfig {
                source: Source::ClientIp,
                header: "x-persist-hash".into()
            })
        );
        let c = Config::parse(
            br#"{"type":"consistent_hash","hash":{"source":{"cookie":"uid"},"header":"X-H"}}"#,
        )
        .unwrap();
        assert_eq!(
            c.kind,
            Kind::ConsistentHash(HashConfig {
                source: Source::Cookie("uid".into()),
                header: "x-h".into()
            })
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"type":"http_cookie","bogus":1}"#, "bogus"),
            (
                r#"{"type":"http_cookie","cookie":{"bogus":1}}"#,
                "cookie.bogus",
            ),
            (r#"{"type":"nope"}"#, "type"),
            (r#"{}"#, "type"),
            (r#"{"type":"http_cookie",}"#, "(root)"),
            (r#"{"type":"http_cookie","handoff":"magic"}"#, "handoff"),
            (r#"{"type":"http_cookie","timeout":"20x"}"#, "timeout"),
            (r#"{"type":"http_cookie","timeout":0}"#, "timeout"),
            (r#"{"type":"http_cookie","timeout":true}"#, "timeout"),
            (
                r#"{"type":"http_cookie","absolute_timeout":"0s"}"#,
                "absolute_timeout",
            ),
            (r#"{"type":"http_cookie","suspect_for":"x"}"#, "suspect_for"),
            (r#"{"type":"http_cookie","max_entries":0}"#, "max_entries"),
            (r#"{"type":"http_cookie","max_entries":-1}"#, "max_entries"),
            (r#"{"type":"http_cookie","name":"a.b"}"#, "name"),
            (
                r#"{"type":"http_cookie","upstream_header":"bad header"}"#,
                "upstream_header",
            ),
            (
                r#"{"type":"http_cookie","upstream_header":"cookie"}"#,
                "upstream_header",
            ),
            (
                r#"{"type":"http_cookie","cookie":{"format":"rot13"}}"#,
                "cookie.format",
            ),
            (
                r#"{"type":"http_cookie","cookie":{"keys":["***"]}}"#,
                "cookie.keys[0]",
            ),
            (
                r#"{"type":"http_cookie","cookie":{"keys":["AAAA"]}}"#,
                "cookie.keys[0]",
            ),
            (
                r#"{"type":"http_cookie","cookie":{"keys":[]}}"#,
                "cookie.keys",
            ),
            (
                r#"{"type":"http_cookie","cookie":{"keys":"abc"}}"#,
                "cookie.keys",
            ),
            (
                r#"{"type":"http_cookie","cookie":{"format":"bigip","keys":["AAAA"]}}"#,
                "cookie.keys",
            ),
            (
                r#"{"type":"http_cookie","cookie":{"name":"a b"}}"#,
                "cookie.name",
            ),
            (
                r#"{"type":"http_cookie","cookie":{"path":"x;y"}}"#,
                "cookie.path",
            ),
            (
                r#"{"type":"http_cookie","cookie":{"path":"app"}}"#,
                "cookie.path",
            ),
            (
                r#"{"type":"http_cookie","cookie":{"domain":"a;b"}}"#,
                "cookie.domain",
            ),
            (
                r#"{"type":"http_cookie","cookie":{"secure":"yes"}}"#,
                "cookie.secure",
            ),
            (
                r#"{"type":"http_cookie","cookie":{"same_site":"lax"}}"#,
                "cookie.same_site",
            ),
            (
                r#"{"type":"http_cookie","cookie":{"same_site":"None"}}"#,
                "cookie.same_site",
            ),
            (
                r#"{"type":"http_cookie","cookie":{"max_age":"0s"}}"#,
                "cookie.max_age",
            ),
            (r#"{"type":"http_cookie"} trailing"#, "(root)"),
            (r#"{"type":"client_ip","cookie":{}}"#, "cookie"),
            (r#"{"type":"http_cookie","client_ip":{}}"#, "client_ip"),
            (r#"{"type":"http_header"}"#, "header.name"),
            (
                r#"{"type":"http_cookie","mirror":{"cluster":"etcd"}}"#,
                "mirror",
            ),
            (
                r#"{"type":"consistent_hash","hash":{"source":"client_ip"},"mirror":{"cluster":"e"}}"#,
                "mirror",
            ),
            (r#"{"type":"client_ip","mirror":{}}"#, "mirror.cluster"),
            (
                r#"{"type":"client_ip","mirror":{"cluster":"e"}}"#,
                "mirror.secret",
            ),
            (
                r#"{"type":"client_ip","mirror":{"cluster":"e","secret":"***"}}"#,
                "mirror.secret",
            ),
            (
                r#"{"type":"client_ip","mirror":{"cluster":"e","secret":"AAAA"}}"#,
                "mirror.secret",
            ),
            (
                r#"{"type":"client_ip","mirror":{"cluster":"e","secret":""}}"#,
                "mirror.secret",
            ),
            (
                r#"{"type":"client_ip","mirror":{"cluster":"e","secret":7}}"#,
                "mirror.secret",
            ),
            (
                r#"{"type":"client_ip","mirror":{"cluster":""}}"#,
                "mirror.cluster",
            ),
            (
                r#"{"type":"client_ip","mirror":{"cluster":"e","prefix":""}}"#,
                "mirror.prefix",
            ),
            (
                r#"{"type":"client_ip","mirror":{"cluster":"e","timeout":"0s"}}"#,
                "mirror.timeout",
            ),
            (
                r#"{"type":"client_ip","mirror":{"cluster":"e","timeout":"11s"}}"#,
                "mirror.timeout",
            ),
            (
                r#"{"type":"client_ip","mirror":{"cluster":"e","timeout":"soon"}}"#,
                "mirror.timeout",
            ),
            (
                r#"{"type":"client_ip","mirror":{"cluster":"e","ttl":"1s"}}"#,
                "mirror.ttl",
            ),
            (r#"{"type":"http_header","header":{}}"#, "header.name"),
            (
                r#"{"type":"http_header","header":{"name":"x-u","servers":{"a":"nope"}}}"#,
                "header.servers.a",
            ),
            (
                r#"{"type":"client_ip","client_ip":{"ipv4_prefix":33}}"#,
                "client_ip.ipv4_prefix",
            ),
            (
                r#"{"type":"client_ip","client_ip":{"ipv6_prefix":0}}"#,
                "client_ip.ipv6_prefix",
            ),
            (r#"{"type":"tls","tls":{"key":"ticket"}}"#, "tls.key"),
            (
                r#"{"type":"tls","tls":{"key":"peer_certificate","session_header":"x"}}"#,
                "tls.session_header",
            ),
            (r#"{"type":"custom"}"#, "custom.source"),
            (
                r#"{"type":"custom","custom":{"source":{"header":"a","cookie":"b"}}}"#,
                "custom.source",
            ),
            (
                r#"{"type":"custom","custom":{"source":{"property":[]}}}"#,
                "custom.source.property",
            ),
            (
                r#"{"type":"custom","custom":{"source":{"header":"a b"}}}"#,
                "custom.source.header",
            ),
            (
                r#"{"type":"app_cookie","app_cookie":{"name":"a;b"}}"#,
                "app_cookie.name",
            ),
            (r#"{"type":"consistent_hash"}"#, "hash.source"),
            (
                r#"{"type":"consistent_hash","hash":{"source":"cookie"}}"#,
                "hash.source",
            ),
            (
                r#"{"type":"consistent_hash","hash":{"source":"path","header":"x-persist-upstream"}}"#,
                "hash.header",
            ),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .map(|(json, field)| (json, field, err(json)))
            .filter(|(_, field, e)| e.field != **field)
            .map(|(json, field, e)| format!("{json}: want {field}, got {e}"))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
        assert!(err("not json")
            .to_string()
            .contains("invalid configuration"));
        assert!(err(r#"{"type":"http_cookie","bogus":1}"#)
            .reason
            .contains("bogus"));
        assert!(err(r#"{}"#).reason.contains("type"));
    }
}
