//! `session_header` persistence (README "session_header"): the sealed token of
//! `http_cookie` in a header the client echoes back, for API and gRPC clients that keep no
//! cookies (Gateway API's `Header` session persistence). The token, its timeouts, refresh
//! and rebinding are [`CookiePersistence`]'s (sealed format); only the carrier differs: the
//! request header `session_header.name` instead of the `Cookie` header, the response header
//! of that name instead of `Set-Cookie`. The token is sealed bound to the header name.

use super::cookie::{
    keys_or_generated, Answered, CookiePersistence, CookieSession, Found, Persisted,
};
use crate::codec::{sealed, Decoded};
use crate::config::{Config, CookieConfig, CookieFormat, SessionHeaderConfig};
use crate::flow::Ctx;
use crate::host::Host;
use crate::stats::Counter;
use std::net::SocketAddr;

/// What a request's header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// No header: `miss`.
    Nothing,
    /// A header that is no valid token (malformed, tampered, unknown key, lapsed, sealed
    /// for another header): `invalid`.
    Invalid,
    Server(Persisted),
}

#[derive(Debug)]
pub struct SessionHeaderPersistence {
    /// The sealed cookie persistence, sealing for the header.
    sealed: CookiePersistence,
    name: String,
}

impl SessionHeaderPersistence {
    /// `keys`: the sealing keys in effect (at least one).
    pub fn new(
        cfg: &SessionHeaderConfig,
        keys: &[[u8; 32]],
        config: &Config,
    ) -> Option<SessionHeaderPersistence> {
        // The cookie half of the settings is unused (nothing is rendered as a cookie).
        let as_cookie = CookieConfig {
            name: "session".into(),
            format: CookieFormat::Sealed,
            keys: Vec::new(),
            path: "/".into(),
            domain: None,
            secure: false,
            http_only: true,
            same_site: None,
            max_age: None,
            always_send: cfg.always_send,
            ingress_nginx: None,
        };
        let sealed =
            CookiePersistence::new(&as_cookie, keys, config.timeout, config.absolute_timeout)?
                .with_sealer(sealed::Sealer::for_header(keys, &cfg.name)?);
        Some(SessionHeaderPersistence {
            sealed,
            name: cfg.name.clone(),
        })
    }

    /// Prepares the profile, generating the sealing key when none is configured.
    pub fn compile(
        config: &Config,
        cfg: &SessionHeaderConfig,
        host: &dyn Host,
    ) -> Result<SessionHeaderPersistence, String> {
        let keys = keys_or_generated(config, &cfg.keys, "session_header.keys", host)?;
        SessionHeaderPersistence::new(cfg, &keys, config)
            .ok_or_else(|| "session_header.keys: the token needs a key".to_string())
    }

    /// Reads the token from the request header's value (surrounding blanks ignored).
    pub fn read(&self, value: Option<&[u8]>, now: u64) -> Token {
        let Some(v) = value else {
            return Token::Nothing;
        };
        match self.sealed.decode(v.trim_ascii(), now) {
            Some(Decoded::Server {
                addr,
                times,
                cluster,
            }) => Token::Server(Persisted {
                addr,
                times,
                cluster,
            }),
            _ => Token::Invalid,
        }
    }

    /// The header carrying the token.
    pub fn header(&self) -> &str {
        &self.name
    }

    pub(crate) fn on_request(&self, ctx: &mut Ctx<'_>) -> CookieSession {
        let value = ctx.host.request_header(&self.name);
        let now_s = if value.is_some() {
            ctx.now_ms() / 1000
        } else {
            0
        };
        let found = match self.read(value.as_deref(), now_s) {
            Token::Nothing => Found::Nothing,
            Token::Invalid => Found::Invalid,
            Token::Server(p) => Found::Server(p),
        };
        CookieSession::start(ctx, found)
    }

    /// Sends the token when it is new, moved, due for refresh or always sent; a copy of the
    /// header the upstream sent is replaced, so the client sees one token.
    pub(crate) fn on_response(
        &self,
        session: &mut CookieSession,
        ctx: &mut Ctx<'_>,
        answered: SocketAddr,
    ) {
        let now_s = ctx.now_ms() / 1000;
        let answered = Answered::in_ctx(ctx, answered);
        let host = ctx.host;
        let worker = &mut *ctx.worker;
        let reply = self.sealed.token(session.persisted, answered, now_s, || {
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
        if let Some(token) = reply.set_cookie {
            let host = ctx.host;
            let sent = match host.response_header(&self.name) {
                Some(_) => host.remove_response_header(&self.name),
                None => Ok(()),
            }
            .and_then(|()| host.add_response_header(&self.name, token.as_bytes()));
            if sent.is_err() {
                ctx.count(Counter::Error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Times;
    use crate::config::Kind;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: u64 = 1_800_000_000;

    fn profile(json: &str) -> SessionHeaderPersistence {
        let c = Config::parse(json.as_bytes()).unwrap();
        let Kind::SessionHeader(k) = &c.kind else {
            panic!()
        };
        let keys = if k.keys.is_empty() {
            vec![[42u8; 32]]
        } else {
            k.keys.clone()
        };
        SessionHeaderPersistence::new(k, &keys, &c).unwrap()
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lifecycle_as_the_sealed_cookie() {
        let p = profile(r#"{"type":"session_header","timeout":"100s","absolute_timeout":"1000s"}"#);
        assert_eq!(p.header(), "x-persist-session");
        assert_eq!(p.read(None, NOW), Token::Nothing);
        let r = p
            .sealed
            .token(None, a("10.0.0.1:80"), NOW, || Some([1; 12]));
        assert_eq!(r.counters, vec![Counter::New]);
        let t = r.set_cookie.unwrap();
        assert!(!t.contains(';') && !t.contains('='), "a bare token: {t}");
        let Token::Server(f) = p.read(Some(format!(" {t} ").as_bytes()), NOW + 10) else {
            panic!()
        };
        assert_eq!(f.addr, a("10.0.0.1:80"));
        assert_eq!(
            f.times,
            Times::Sealed {
                issued: NOW as u32,
                refreshed: NOW as u32
            }
        );
        // Fresh: nothing sent; due for refresh after half the timeout; lapsed after it.
        assert_eq!(
            p.sealed
                .token(Some(f), f.addr, NOW + 10, || None)
                .set_cookie,
            None
        );
        assert!(p
            .sealed
            .token(Some(f), f.addr, NOW + 50, || Some([2; 12]))
            .set_cookie
            .is_some());
        assert_eq!(p.read(Some(t.as_bytes()), NOW + 101), Token::Invalid);
        // Another server answered: rebind.
        let r = p
            .sealed
            .token(Some(f), a("10.0.0.2:80"), NOW, || Some([3; 12]));
        assert_eq!(r.counters, vec![Counter::Rebind, Counter::New]);
        // Garbage, empty, a cookie value sealed with the same key: invalid.
        assert_eq!(p.read(Some(b"garbage"), NOW), Token::Invalid);
        assert_eq!(p.read(Some(b""), NOW), Token::Invalid);
        let cookie = sealed::Sealer::new(&[[42u8; 32]], "x-persist-session")
            .unwrap()
            .seal(
                &sealed::Sealed {
                    addr: a("10.0.0.1:80"),
                    issued: NOW as u32,
                    refreshed: NOW as u32,
                    cluster: 0,
                },
                [9; 12],
            )
            .unwrap();
        assert_eq!(p.read(Some(cookie.as_bytes()), NOW), Token::Invalid);
    }

    #[test]
    fn bound_to_the_header_name() {
        let p = profile(r#"{"type":"session_header"}"#);
        let q = profile(r#"{"type":"session_header","session_header":{"name":"X-Other"}}"#);
        assert_eq!(q.header(), "x-other");
        let t = p
            .sealed
            .token(None, a("10.0.0.1:80"), NOW, || Some([1; 12]))
            .set_cookie
            .unwrap();
        assert!(matches!(p.read(Some(t.as_bytes()), NOW), Token::Server(_)));
        assert_eq!(q.read(Some(t.as_bytes()), NOW), Token::Invalid);
    }

    #[test]
    fn config_fields_and_errors() {
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let c = Config::parse(
            format!(
                r#"{{"type":"session_header","session_header":{{"name":"X-Sess","keys":["{key}"],"always_send":true}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let Kind::SessionHeader(k) = c.kind else {
            panic!()
        };
        assert_eq!(
            (k.name.as_str(), k.keys.len(), k.always_send),
            ("x-sess", 1, true)
        );
        assert!(!Config::parse(br#"{"type":"session_header"}"#)
            .unwrap()
            .kind
            .uses_table());
        for (json, field) in [
            (
                r#"{"type":"session_header","session_header":{"name":"a b"}}"#,
                "session_header.name",
            ),
            (
                r#"{"type":"session_header","session_header":{"name":"Cookie"}}"#,
                "session_header.name",
            ),
            (
                r#"{"type":"session_header","session_header":{"name":"grpc-status"}}"#,
                "session_header.name",
            ),
            (
                r#"{"type":"session_header","session_header":{"name":"x-persist-upstream"}}"#,
                "session_header.name",
            ),
            (
                r#"{"type":"session_header","session_header":{"keys":[]}}"#,
                "session_header.keys",
            ),
            (
                r#"{"type":"session_header","session_header":{"keys":["AAAA"]}}"#,
                "session_header.keys[0]",
            ),
            (
                r#"{"type":"session_header","session_header":{"bogus":1}}"#,
                "session_header.bogus",
            ),
            (r#"{"type":"session_header","cookie":{}}"#, "cookie"),
            (
                r#"{"type":"http_cookie","session_header":{}}"#,
                "session_header",
            ),
            (
                r#"{"type":"session_header","mirror":{"cluster":"e"}}"#,
                "mirror",
            ),
        ] {
            assert_eq!(
                Config::parse(json.as_bytes()).unwrap_err().field,
                field,
                "{json}"
            );
        }
    }
}
