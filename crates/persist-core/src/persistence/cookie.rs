//! `http_cookie` persistence (README "Cookie formats and migration"): the client stores the server in a cookie; nothing is
//! stored in the proxy (bar the NGINX hashes). This module decides, for a request, which
//! server to name, and for a response, whether and what `Set-Cookie` to send.

use crate::codec::{self, bigip, envoy, ingress_nginx, nginx, sealed, Decoded, Times};
use crate::config::{Config, CookieConfig, CookieFormat};
use crate::cookie::{header, set_cookie::SetCookieTemplate};
use crate::flow::Ctx;
use crate::host::Host;
use crate::persistence::learned_hashes::LearnedHashes;
use crate::stats::Counter;
use crate::store::{self, StoreError};
use std::net::SocketAddr;
use std::time::Duration;

/// A sealed cookie whose refresh time is this far in the future is rejected (clock skew
/// between Envoys is tolerated up to this).
pub const MAX_FUTURE_SECS: u64 = 300;

/// The request's persistence, as read from its cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No cookie of ours: `miss`.
    Nothing,
    /// A cookie of ours that cannot be used: `invalid`.
    Invalid,
    /// A well-formed NGINX hash, to resolve through the learned hashes.
    Hash([u8; 16]),
    /// A valid cookie naming a server.
    Server(Persisted),
}

/// A server the client is persisted to, with its cookie's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persisted {
    pub addr: SocketAddr,
    pub times: Times,
    /// The tag of the cluster it was recorded in; 0: none (README "Weighted clusters").
    pub cluster: u32,
}

/// Who answered a request: the server, and with `clusters` the tag of the allowed cluster
/// it answered from (0: another one). A bare address is a profile without `clusters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub server: SocketAddr,
    pub cluster: Option<u32>,
}

impl From<SocketAddr> for Answered {
    fn from(server: SocketAddr) -> Answered {
        Answered {
            server,
            cluster: None,
        }
    }
}

impl Answered {
    /// `server`, with the cluster it answered from when the profile has `clusters`.
    pub(crate) fn in_ctx(ctx: &mut Ctx<'_>, server: SocketAddr) -> Answered {
        Answered {
            server,
            cluster: ctx.answered_cluster(server),
        }
    }

    /// Whether a client persisted to `p` has moved: another server answered, or another
    /// cluster than the one recorded (a cookie without a cluster, from before `clusters`,
    /// only learns its cluster).
    fn moved_from(&self, p: &Persisted) -> bool {
        p.addr != self.server || (p.cluster != 0 && self.cluster.is_some_and(|c| c != p.cluster))
    }
}

/// What to do on the response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub set_cookie: Option<String>,
    /// `new` and/or `rebind`.
    pub counters: Vec<Counter>,
}

#[derive(Debug)]
pub struct CookiePersistence {
    format: CookieFormat,
    name: Vec<u8>,
    template: SetCookieTemplate,
    sealer: Option<sealed::Sealer>,
    timeout: u64,
    absolute: Option<u64>,
    always_send: bool,
    /// `ingress_nginx` format only.
    ingress: Option<ingress_nginx::Cookies>,
}

fn secs(d: Duration) -> u64 {
    // Sub-second timeouts round up to one second: cookies carry whole seconds.
    d.as_millis().div_ceil(1000).max(1) as u64
}

fn u32_secs(now: u64) -> u32 {
    u32::try_from(now).unwrap_or(u32::MAX)
}

impl CookiePersistence {
    /// `keys` are the sealing keys in effect (configured, or the generated one); they are
    /// only used by the `sealed` format, which needs at least one.
    pub fn new(
        cfg: &CookieConfig,
        keys: &[[u8; 32]],
        timeout: Duration,
        absolute: Option<Duration>,
    ) -> Option<Self> {
        let sealer = match cfg.format {
            CookieFormat::Sealed => Some(sealed::Sealer::new(keys, &cfg.name)?),
            _ => None,
        };
        Some(CookiePersistence {
            format: cfg.format,
            name: cfg.name.as_bytes().to_vec(),
            template: SetCookieTemplate::new(cfg, cfg.format == CookieFormat::Envoy),
            sealer,
            timeout: secs(timeout),
            absolute: absolute.map(secs),
            always_send: cfg.always_send,
            ingress: cfg.ingress_nginx.as_ref().map(ingress_nginx::Cookies::new),
        })
    }

    /// The hashes this profile's workers learn from answering servers: NGINX Plus's, or
    /// ingress-nginx's salted ones.
    pub fn learned_hashes(&self, profile: &str) -> LearnedHashes {
        match &self.ingress {
            Some(i) => LearnedHashes::salted(profile, i.salt()),
            None => LearnedHashes::new(profile),
        }
    }

    /// Whether reading or writing cookies needs the current time.
    pub fn needs_clock(&self) -> bool {
        matches!(self.format, CookieFormat::Sealed | CookieFormat::Envoy)
    }

    /// Reads the request's `Cookie` header. The first usable cookie of ours wins.
    pub fn read(&self, cookie_header: Option<&[u8]>, now: u64) -> Found {
        let Some(h) = cookie_header else {
            return Found::Nothing;
        };
        let mut found = Found::Nothing;
        for value in header::values(h, &self.name) {
            match self.decode(value, now) {
                Some(Decoded::Server {
                    addr,
                    times,
                    cluster,
                }) => {
                    return Found::Server(Persisted {
                        addr,
                        times,
                        cluster,
                    })
                }
                Some(Decoded::Hash(h)) => return Found::Hash(h),
                None => found = Found::Invalid,
            }
        }
        found
    }

    pub(crate) fn decode(&self, value: &[u8], now: u64) -> Option<Decoded> {
        match self.format {
            CookieFormat::Sealed => {
                let s = self.sealer.as_ref()?.open(value)?;
                let (issued, refreshed) = (u64::from(s.issued), u64::from(s.refreshed));
                if refreshed > now.saturating_add(MAX_FUTURE_SECS)
                    || issued > refreshed
                    || now.saturating_sub(refreshed) > self.timeout
                    || self
                        .absolute
                        .is_some_and(|abs| now.saturating_sub(issued) > abs)
                {
                    return None;
                }
                Some(Decoded::Server {
                    addr: s.addr,
                    times: Times::Sealed {
                        issued: s.issued,
                        refreshed: s.refreshed,
                    },
                    cluster: s.cluster,
                })
            }
            CookieFormat::Envoy => {
                let (addr, expires) = envoy::decode(value)?;
                let times = match expires {
                    Some(e) if e >= envoy::WALL_CLOCK_FLOOR => {
                        if now > e {
                            return None;
                        }
                        Times::Expires(e)
                    }
                    Some(e) => Times::Expires(e),
                    None => Times::None,
                };
                Some(Decoded::Server {
                    addr,
                    times,
                    cluster: 0,
                })
            }
            CookieFormat::Nginx => nginx::decode(value).map(Decoded::Hash),
            CookieFormat::Bigip => bigip::decode(value).map(|addr| Decoded::Server {
                addr,
                times: Times::None,
                cluster: 0,
            }),
            CookieFormat::IngressNginx => self.ingress.as_ref()?.decode(value),
        }
    }

    /// Decides the response's `Set-Cookie`, once the server that answered is known.
    /// `persisted` is the request's valid cookie, if any.
    pub fn reply(
        &self,
        persisted: Option<Persisted>,
        answered: impl Into<Answered>,
        now: u64,
        nonce: impl FnOnce() -> Option<[u8; 12]>,
    ) -> Reply {
        let mut reply = self.token(persisted, answered, now, nonce);
        reply.set_cookie = reply.set_cookie.map(|v| self.template.render(&v));
        reply
    }

    /// As [`CookiePersistence::reply`], with the bare value in `set_cookie` (no cookie
    /// attributes): what another carrier (`session_header`) sends.
    pub(crate) fn token(
        &self,
        persisted: Option<Persisted>,
        answered: impl Into<Answered>,
        now: u64,
        nonce: impl FnOnce() -> Option<[u8; 12]>,
    ) -> Reply {
        let answered = answered.into();
        let mut counters = Vec::new();
        let (issued, send) = match persisted {
            None => {
                counters.push(Counter::New);
                (now, true)
            }
            Some(p) if answered.moved_from(&p) => {
                counters.push(Counter::Rebind);
                counters.push(Counter::New);
                (now, true)
            }
            Some(p) => {
                let issued = match p.times {
                    Times::Sealed { issued, .. } => u64::from(issued),
                    _ => now,
                };
                // A cookie from before `clusters` learns its cluster at once.
                let learns_cluster = answered.cluster.is_some_and(|c| c != p.cluster);
                let due = self.always_send || learns_cluster || self.refresh_due(p.times, now);
                (issued, due)
            }
        };
        let set_cookie = if send {
            self.encode(answered, issued, now, nonce)
        } else {
            None
        };
        if send && set_cookie.is_none() {
            counters.push(Counter::Error);
        }
        Reply {
            set_cookie,
            counters,
        }
    }

    /// Re-send when older than half the timeout; upgrade Envoy cookies without a wall-clock
    /// expiry to the current form.
    fn refresh_due(&self, times: Times, now: u64) -> bool {
        let half = self.timeout / 2;
        match (self.format, times) {
            (_, Times::Legacy) => true,
            (_, Times::Sealed { refreshed, .. }) => {
                now.saturating_sub(u64::from(refreshed)) >= half
            }
            (CookieFormat::Envoy, Times::Expires(e)) if e >= envoy::WALL_CLOCK_FLOOR => {
                // Issued at e - timeout; due once half of it has passed.
                now.saturating_add(self.timeout) >= e.saturating_add(half)
            }
            (CookieFormat::Envoy, _) => true,
            _ => false,
        }
    }

    fn encode(
        &self,
        answered: Answered,
        issued: u64,
        now: u64,
        nonce: impl FnOnce() -> Option<[u8; 12]>,
    ) -> Option<String> {
        let addr = answered.server;
        match self.format {
            CookieFormat::Sealed => self.sealer.as_ref()?.seal(
                &sealed::Sealed {
                    addr,
                    issued: u32_secs(issued),
                    refreshed: u32_secs(now),
                    cluster: answered.cluster.unwrap_or(0),
                },
                nonce()?,
            ),
            CookieFormat::Envoy => Some(envoy::encode(addr, now.saturating_add(self.timeout))),
            CookieFormat::Nginx => Some(nginx::encode(addr)),
            CookieFormat::Bigip => Some(bigip::encode(addr)),
            CookieFormat::IngressNginx => self.ingress.as_ref().map(|i| i.encode(addr)),
        }
    }

    pub fn format(&self) -> CookieFormat {
        self.format
    }

    /// The same persistence sealing with `sealer` (another carrier's binding).
    pub(crate) fn with_sealer(mut self, sealer: sealed::Sealer) -> Self {
        self.sealer = Some(sealer);
        self
    }
}

/// What the request half found: the request's valid persistence, if any.
#[derive(Debug, Default)]
pub struct CookieSession {
    pub(crate) persisted: Option<Persisted>,
}

impl CookieSession {
    /// The tail of both client-stored request halves (cookie, `session_header`): counts
    /// what the request carried and names its persisted server.
    pub(crate) fn start(ctx: &mut Ctx<'_>, found: Found) -> CookieSession {
        let mut session = CookieSession::default();
        match found {
            Found::Nothing | Found::Hash(_) => ctx.count(Counter::Miss),
            Found::Invalid => ctx.count(Counter::Invalid),
            Found::Server(p) => {
                session.persisted = Some(p);
                ctx.prefer(p.addr, p.cluster);
            }
        }
        session
    }
}

/// Sealing keys in effect: the configured ones, or one generated per Envoy process and
/// shared by all its workers through shared data (README "Keys").
fn sealing_keys(
    config: &Config,
    cookie: &CookieConfig,
    host: &dyn Host,
) -> Result<Vec<[u8; 32]>, String> {
    if cookie.format != CookieFormat::Sealed {
        return Ok(cookie.keys.clone());
    }
    keys_or_generated(config, &cookie.keys, "cookie.keys", host)
}

/// `configured`, or (when empty) the key generated for this profile by the first worker
/// of this Envoy; errors name `field`.
pub(crate) fn keys_or_generated(
    config: &Config,
    configured: &[[u8; 32]],
    field: &str,
    host: &dyn Host,
) -> Result<Vec<[u8; 32]>, String> {
    if !configured.is_empty() {
        return Ok(configured.to_vec());
    }
    let mut candidate = [0u8; 32];
    if !host.random(&mut candidate) {
        return Err(format!(
            "{field}: no randomness to generate a key; configure one"
        ));
    }
    let key_name = format!("persist.{}.sealkey", config.name);
    let stored = store::get_or_insert(host, &key_name, &candidate, |v| v.len() == 32)
        .map_err(|e| format!("{field}: could not share a generated key ({e:?}); configure one"))?;
    let key: [u8; 32] = stored
        .as_slice()
        .try_into()
        .map_err(|_| format!("{field}: shared key has the wrong size"))?;
    Ok(vec![key])
}

impl CookiePersistence {
    /// Prepares the `http_cookie` persistence of a profile, generating the sealing key
    /// when none is configured.
    pub fn compile(
        config: &Config,
        cookie: &CookieConfig,
        host: &dyn Host,
    ) -> Result<Self, String> {
        let keys = sealing_keys(config, cookie, host)?;
        CookiePersistence::new(cookie, &keys, config.timeout, config.absolute_timeout)
            .ok_or_else(|| "cookie.keys: the sealed format needs a key".to_string())
    }

    /// The request half. Host calls on the steady path (valid cookie): the cookie read,
    /// the clock for the formats that carry times.
    pub(crate) fn on_request(&self, ctx: &mut Ctx<'_>) -> CookieSession {
        let header = ctx.host.request_header("cookie");
        let now_s = if self.needs_clock() && header.is_some() {
            ctx.now_ms() / 1000
        } else {
            0
        };
        let mut found = self.read(header.as_deref(), now_s);
        if let Found::Hash(hash) = found {
            found = match ctx.worker.hashes.resolve(ctx.host, &hash) {
                Ok(Some(addr)) => Found::Server(Persisted {
                    addr,
                    times: Default::default(),
                    cluster: 0,
                }),
                Ok(None) => Found::Nothing,
                Err(StoreError::CasMismatch | StoreError::Host) => {
                    ctx.count(Counter::Error);
                    Found::Nothing
                }
            };
        }
        CookieSession::start(ctx, found)
    }

    /// The response half: learn the NGINX hash of the server that answered, and send the
    /// cookie when it is new, moved, due for refresh or always sent.
    pub(crate) fn on_response(
        &self,
        session: &mut CookieSession,
        ctx: &mut Ctx<'_>,
        answered: SocketAddr,
    ) {
        if matches!(
            self.format,
            CookieFormat::Nginx | CookieFormat::IngressNginx
        ) && !ctx.worker.hashes.published(answered)
            && ctx.response_from_upstream()
            && ctx.worker.hashes.learn(ctx.host, answered).is_err()
        {
            ctx.count(Counter::Error);
        }
        let now_ms = if self.needs_clock() || ctx.named().is_some_and(|n| n != answered) {
            ctx.now_ms()
        } else {
            0
        };
        let answered = Answered::in_ctx(ctx, answered);
        let host = ctx.host;
        let worker = &mut *ctx.worker;
        let reply = self.reply(session.persisted, answered, now_ms / 1000, || {
            worker.next_nonce(host)
        });
        if reply.set_cookie.is_none() && reply.counters.is_empty() {
            return;
        }
        // Nothing is issued, re-issued or rebound from a response no upstream produced.
        if !ctx.response_from_upstream() {
            return;
        }
        for c in &reply.counters {
            ctx.count(*c);
        }
        if let Some(sc) = reply.set_cookie {
            if ctx
                .host
                .add_response_header("set-cookie", sc.as_bytes())
                .is_err()
            {
                ctx.count(Counter::Error);
            }
        }
    }
}

/// Re-exported so callers can name the times without reaching into the codecs.
pub use codec::Times as CookieTimes;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Kind};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: u64 = 1_800_000_000;

    fn profile(json: &str) -> CookiePersistence {
        let c = Config::parse(json.as_bytes()).unwrap();
        let Kind::HttpCookie(k) = &c.kind else {
            panic!()
        };
        let keys = if k.keys.is_empty() {
            vec![[42u8; 32]]
        } else {
            k.keys.clone()
        };
        CookiePersistence::new(k, &keys, c.timeout, c.absolute_timeout).unwrap()
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn cookie_value(set_cookie: &str) -> &str {
        let v = set_cookie.split(';').next().unwrap();
        v.split_once('=').unwrap().1.trim_matches('"')
    }

    #[test]
    fn sealed_lifecycle() {
        let p = profile(r#"{"type":"http_cookie","timeout":"100s","absolute_timeout":"1000s"}"#);
        assert!(p.needs_clock());
        assert_eq!(p.read(None, NOW), Found::Nothing);
        assert_eq!(p.read(Some(b"other=1"), NOW), Found::Nothing);
        // New client.
        let r = p.reply(None, a("10.0.0.1:80"), NOW, || Some([1; 12]));
        assert_eq!(r.counters, vec![Counter::New]);
        let sc = r.set_cookie.unwrap();
        assert!(sc.starts_with("persist=") && sc.ends_with("; Path=/; HttpOnly"));
        let header = format!("x=1; persist={}; y=2", cookie_value(&sc));
        let Found::Server(found) = p.read(Some(header.as_bytes()), NOW + 10) else {
            panic!("not found")
        };
        assert_eq!(found.addr, a("10.0.0.1:80"));
        // Same server, fresh: nothing to send.
        assert_eq!(
            p.reply(Some(found), a("10.0.0.1:80"), NOW + 10, || None),
            Reply::default()
        );
        // Half the timeout passed: refresh, keeping the issue time.
        let r = p.reply(Some(found), a("10.0.0.1:80"), NOW + 50, || Some([2; 12]));
        assert!(r.counters.is_empty());
        let refreshed = format!("persist={}", cookie_value(r.set_cookie.as_ref().unwrap()));
        let Found::Server(f2) = p.read(Some(refreshed.as_bytes()), NOW + 140) else {
            panic!("refreshed cookie lost")
        };
        assert_eq!(
            f2.times,
            Times::Sealed {
                issued: NOW as u32,
                refreshed: (NOW + 50) as u32
            }
        );
        // Idle past the timeout: invalid.
        assert_eq!(p.read(Some(header.as_bytes()), NOW + 101), Found::Invalid);
        // Absolute timeout, even when refreshed.
        assert_eq!(
            p.read(Some(refreshed.as_bytes()), NOW + 1001),
            Found::Invalid
        );
        // From the future.
        assert_eq!(p.read(Some(header.as_bytes()), NOW - 301), Found::Invalid);
        // Another server answered: rebind + new cookie for it.
        let r = p.reply(Some(found), a("10.0.0.2:80"), NOW + 20, || Some([3; 12]));
        assert_eq!(r.counters, vec![Counter::Rebind, Counter::New]);
        let moved = format!("persist={}", cookie_value(r.set_cookie.as_ref().unwrap()));
        let Found::Server(f3) = p.read(Some(moved.as_bytes()), NOW + 20) else {
            panic!()
        };
        assert_eq!(f3.addr, a("10.0.0.2:80"));
        // Nonce exhaustion is an error, not a panic.
        let r = p.reply(None, a("10.0.0.1:80"), NOW, || None);
        assert_eq!(r.set_cookie, None);
        assert_eq!(r.counters, vec![Counter::New, Counter::Error]);
    }

    #[test]
    fn first_valid_cookie_wins_and_garbage_is_invalid() {
        let p = profile(r#"{"type":"http_cookie"}"#);
        let sc = p
            .reply(None, a("10.0.0.7:80"), NOW, || Some([1; 12]))
            .set_cookie
            .unwrap();
        let h = format!("persist=garbage; persist={}", cookie_value(&sc));
        assert!(matches!(p.read(Some(h.as_bytes()), NOW), Found::Server(_)));
        assert_eq!(p.read(Some(b"persist=garbage"), NOW), Found::Invalid);
        assert_eq!(p.read(Some(b"persist="), NOW), Found::Invalid);
        assert_eq!(p.read(Some(&[0xff, b'=', 0xfe][..]), NOW), Found::Nothing);
    }

    #[test]
    fn always_send() {
        let p = profile(r#"{"type":"http_cookie","cookie":{"always_send":true}}"#);
        let persisted = Persisted {
            addr: a("10.0.0.1:80"),
            times: Times::Sealed {
                issued: NOW as u32,
                refreshed: NOW as u32,
            },
            cluster: 0,
        };
        let r = p.reply(Some(persisted), a("10.0.0.1:80"), NOW, || Some([1; 12]));
        assert!(r.set_cookie.is_some());
        assert!(r.counters.is_empty());
    }

    #[test]
    fn envoy_format() {
        let p = profile(r#"{"type":"http_cookie","timeout":"100s","cookie":{"format":"envoy"}}"#);
        let r = p.reply(None, a("127.0.0.1:8081"), NOW, || None);
        let sc = r.set_cookie.unwrap();
        assert!(sc.starts_with("persist=\""), "{sc}");
        let v = cookie_value(&sc);
        assert_eq!(
            envoy::decode(v.as_bytes()),
            Some((a("127.0.0.1:8081"), Some(NOW + 100)))
        );
        let h = format!("persist=\"{v}\"");
        let Found::Server(f) = p.read(Some(h.as_bytes()), NOW + 10) else {
            panic!()
        };
        assert_eq!(p.reply(Some(f), f.addr, NOW + 10, || None).set_cookie, None);
        assert!(p
            .reply(Some(f), f.addr, NOW + 50, || None)
            .set_cookie
            .is_some());
        assert_eq!(p.read(Some(h.as_bytes()), NOW + 101), Found::Invalid);
        // Envoy's monotonic expiry: accepted, then upgraded.
        let mono = format!("persist={}", envoy::encode(a("127.0.0.1:8082"), 5000));
        let Found::Server(m) = p.read(Some(mono.as_bytes()), NOW) else {
            panic!()
        };
        assert!(p.reply(Some(m), m.addr, NOW, || None).set_cookie.is_some());
        // Legacy base64 ip:port: accepted, then upgraded.
        let Found::Server(l) = p.read(Some(b"persist=MTI3LjAuMC4xOjgwODE="), NOW) else {
            panic!()
        };
        assert_eq!(l.addr, a("127.0.0.1:8081"));
        assert!(p.reply(Some(l), l.addr, NOW, || None).set_cookie.is_some());
    }

    #[test]
    fn nginx_and_bigip_formats() {
        let n = profile(r#"{"type":"http_cookie","cookie":{"format":"nginx"}}"#);
        assert!(!n.needs_clock());
        let sc = n
            .reply(None, a("127.0.0.1:8081"), 0, || None)
            .set_cookie
            .unwrap();
        let v = cookie_value(&sc).to_string();
        assert_eq!(v, format!("{:x}", md5::compute("127.0.0.1:8081")));
        let h = format!("persist={v}");
        assert_eq!(
            n.read(Some(h.as_bytes()), 0),
            Found::Hash(nginx::hash(a("127.0.0.1:8081")).0)
        );
        assert_eq!(n.read(Some(b"persist=xyz"), 0), Found::Invalid);
        let persisted = Persisted {
            addr: a("127.0.0.1:8081"),
            times: Times::None,
            cluster: 0,
        };
        assert_eq!(
            n.reply(Some(persisted), persisted.addr, 0, || None)
                .set_cookie,
            None
        );

        let b = profile(
            r#"{"type":"http_cookie","cookie":{"format":"bigip","name":"BIGipServerpool"}}"#,
        );
        let sc = b
            .reply(None, a("10.1.1.100:8080"), 0, || None)
            .set_cookie
            .unwrap();
        assert_eq!(
            sc,
            "BIGipServerpool=1677787402.36895.0000; Path=/; HttpOnly"
        );
        let Found::Server(f) = b.read(Some(b"BIGipServerpool=1677787402.36895.0000"), 0) else {
            panic!()
        };
        assert_eq!(f.addr, a("10.1.1.100:8080"));
        assert_eq!(b.reply(Some(f), f.addr, 0, || None).set_cookie, None);
    }

    /// Deterministic xorshift, so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_and_mutated_headers_never_panic_nor_forge() {
        let alphabet: &[u8] = b"persist=;\" \t,AZaz09+/-_.%\xff\x00vi";
        for format in ["sealed", "envoy", "nginx", "bigip"] {
            let p = profile(&format!(
                r#"{{"type":"http_cookie","cookie":{{"format":"{format}"}}}}"#
            ));
            let valid = p
                .reply(None, a("10.9.8.7:6543"), NOW, || Some([4; 12]))
                .set_cookie
                .unwrap();
            let valid = format!("persist={}", cookie_value(&valid));
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            for _ in 0..20_000 {
                let mut h: Vec<u8> = if rng.below(2) == 0 {
                    valid.as_bytes().to_vec()
                } else {
                    (0..rng.below(120))
                        .map(|_| alphabet[rng.below(alphabet.len())])
                        .collect()
                };
                for _ in 0..=rng.below(4) {
                    if h.is_empty() {
                        break;
                    }
                    let i = rng.below(h.len());
                    match rng.below(3) {
                        0 => h[i] = alphabet[rng.below(alphabet.len())],
                        1 => {
                            h.remove(i);
                        }
                        _ => h.insert(i, rng.next() as u8),
                    }
                }
                // Must not panic; a server may only come out of an input that still
                // contains a well-formed cookie for it.
                match p.read(Some(&h), NOW) {
                    Found::Server(f) if format == "sealed" => {
                        assert_eq!(f.addr, a("10.9.8.7:6543"), "{format}: forged {h:?}")
                    }
                    _ => {}
                }
            }
        }
    }
}
