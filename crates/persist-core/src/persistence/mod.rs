//! The persistence kinds, each shaped like Envoy's own session state: a request half that
//! yields the server to name ([`crate::flow::Ctx::prefer`]), and a response half that learns
//! the server that answered.
//!
//! - [`cookie`]: client stored (`http_cookie`, README "Cookie persistence");
//! - [`session_header`]: client stored in a header, the sealed cookie's token
//!   (`session_header`, README "session_header");
//! - [`table`]: locally stored (`app_cookie`, `http_header`, `client_ip`, `tls`, `custom`,
//!   README "Locally stored types"): one table flow, a [`crate::client_key::ClientKey`] per kind;
//! - [`hash`]: `consistent_hash`, nothing stored.
//!
//! A new kind is its module here (or a `ClientKey` for a table kind), its configuration
//! section, and one line in [`Persistence::compile`].

pub mod cookie;
pub mod hash;
pub mod learned_hashes;
pub mod session_header;
pub mod table;

use crate::client_key::{app_cookie, client_ip, custom, header, tls};
use crate::config::{Config, Kind};
use crate::flow::Ctx;
use crate::host::Host;
use crate::table::Table;
use cookie::{CookiePersistence, CookieSession};
use hash::HashPersistence;
use session_header::SessionHeaderPersistence;
use std::net::SocketAddr;
use table::{TablePersistence, TableSession};

/// The compiled persistence of a profile.
#[derive(Debug)]
pub enum Persistence {
    Cookie(CookiePersistence),
    SessionHeader(SessionHeaderPersistence),
    Table(TablePersistence),
    Hash(HashPersistence),
}

/// What the request half found, for the response half.
#[derive(Debug, Default)]
pub enum Session {
    #[default]
    Nothing,
    Cookie(CookieSession),
    Table(TableSession),
}

impl Persistence {
    /// The registry of kinds: one line each.
    pub fn compile(config: &Config, host: &dyn Host) -> Result<Persistence, String> {
        let table = |key| TablePersistence::new(config, key, host).map(Persistence::Table);
        Ok(match &config.kind {
            Kind::HttpCookie(c) => {
                Persistence::Cookie(CookiePersistence::compile(config, c, host)?)
            }
            Kind::SessionHeader(c) => {
                Persistence::SessionHeader(SessionHeaderPersistence::compile(config, c, host)?)
            }
            Kind::AppCookie(c) => table(app_cookie::key(c))?,
            Kind::HttpHeader(c) => table(header::key(c))?,
            Kind::ClientIp(c) => table(client_ip::key_of(c))?,
            Kind::Tls(c) => table(tls::key(c))?,
            Kind::Custom(c) => table(custom::key(c))?,
            Kind::ConsistentHash(c) => Persistence::Hash(HashPersistence::new(c)),
        })
    }

    /// The hashes a worker learns from answering servers (NGINX-style cookie formats).
    pub fn learned_hashes(&self, profile: &str) -> learned_hashes::LearnedHashes {
        match self {
            Persistence::Cookie(c) => c.learned_hashes(profile),
            _ => learned_hashes::LearnedHashes::new(profile),
        }
    }

    /// The local table, for the locally stored kinds.
    pub fn table(&self) -> Option<&Table> {
        match self {
            Persistence::Table(t) => Some(&t.table),
            _ => None,
        }
    }

    /// Whether the response half has anything to learn.
    pub fn learns_from_response(&self) -> bool {
        !matches!(self, Persistence::Hash(_))
    }

    pub(crate) fn on_request(&self, ctx: &mut Ctx<'_>) -> Session {
        match self {
            Persistence::Cookie(c) => Session::Cookie(c.on_request(ctx)),
            Persistence::SessionHeader(h) => Session::Cookie(h.on_request(ctx)),
            Persistence::Table(t) => Session::Table(t.on_request(ctx)),
            Persistence::Hash(h) => {
                h.on_request(ctx);
                Session::Nothing
            }
        }
    }

    pub(crate) fn on_lookup_answer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx<'_>,
        body: Option<&[u8]>,
    ) {
        if let (Persistence::Table(t), Session::Table(s)) = (self, session) {
            t.on_lookup_answer(s, ctx, body);
        }
    }

    pub(crate) fn on_response(
        &self,
        session: &mut Session,
        ctx: &mut Ctx<'_>,
        answered: SocketAddr,
    ) {
        match (self, session) {
            (Persistence::Cookie(c), Session::Cookie(s)) => c.on_response(s, ctx, answered),
            (Persistence::SessionHeader(h), Session::Cookie(s)) => h.on_response(s, ctx, answered),
            (Persistence::Table(t), Session::Table(s)) => t.on_response(s, ctx, answered),
            _ => {}
        }
    }
}
