//! One request through the flow: the request half names the persisted server, the response
//! half learns the server that answered and lets the kind record or re-issue persistence.

use super::{handoff, suspects, Profile, Worker};
use crate::host::Host;
use crate::persistence::Session;
use crate::stats::Counter;
use std::net::SocketAddr;

/// What the host does with the request after its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestAction {
    Continue,
    /// A mirror lookup is under way (at most `mirror.timeout`): the host holds the request
    /// until [`Request::on_lookup_answer`].
    WaitForLookup,
}

/// What every kind shares about one request.
#[derive(Debug, Default)]
pub(crate) struct Common {
    /// The server handed to Envoy (the persisted one, unless it is suspect).
    pub named: Option<SocketAddr>,
    /// Named through the host's upstream override rather than the hand-off header.
    pub overridden: bool,
    /// Wall-clock milliseconds, read at most once per request.
    pub now_ms: Option<u64>,
    /// With `mirror`: the token of the etcd lookup the request waits for.
    pub lookup: Option<u32>,
    /// Whether the response came from an upstream (read at most once, and only when the
    /// kind is about to issue, learn or rebind something).
    pub from_upstream: Option<bool>,
}

/// The per-request state of the flow.
#[derive(Debug, Default)]
pub struct Request {
    common: Common,
    session: Session,
}

/// What a kind's request or response half works with: the host, the worker, the profile's
/// shared services, and the request's common state.
pub struct Ctx<'a> {
    pub host: &'a dyn Host,
    pub worker: &'a mut Worker,
    pub profile: &'a Profile,
    pub(crate) common: &'a mut Common,
}

/// Envoy's `%RESPONSE_CODE_DETAILS%` for a response an upstream produced; anything else
/// (`no_healthy_upstream`, `upstream_reset_before_response_started{…}`,
/// `response_timeout`…) is a local reply.
const VIA_UPSTREAM: &[u8] = b"via_upstream";

impl Ctx<'_> {
    pub fn count(&mut self, c: Counter) {
        self.worker.count(c);
    }

    pub fn now_ms(&mut self) -> u64 {
        if let Some(t) = self.common.now_ms {
            return t;
        }
        let t = self.host.now_ms().unwrap_or(0);
        self.common.now_ms = Some(t);
        t
    }

    pub fn now_s(&mut self) -> u32 {
        u32::try_from(self.now_ms() / 1000).unwrap_or(u32::MAX)
    }

    /// Names `persisted` to Envoy unless it is suspect; counts `hit` when it is named.
    pub fn prefer(&mut self, persisted: SocketAddr) {
        if !suspects::is_suspect(self, persisted) {
            self.common.named = Some(persisted);
            self.count(Counter::Hit);
        }
    }

    /// The server named to Envoy for this request, if any.
    pub fn named(&self) -> Option<SocketAddr> {
        self.common.named
    }

    /// Whether an upstream produced the response. Nothing is issued, re-issued, learned or
    /// rebound from Envoy's local replies (README "Failover"): the kinds ask this right
    /// before they would write, so a steady request pays nothing for it.
    pub fn response_from_upstream(&mut self) -> bool {
        if let Some(known) = self.common.from_upstream {
            return known;
        }
        let known = match self.host.property(&["response", "code_details"]) {
            Some(details) => details == VIA_UPSTREAM,
            // A host that cannot tell: as before this check existed.
            None => true,
        };
        self.common.from_upstream = Some(known);
        known
    }

    /// The mirror lookup a kind started for this request.
    pub(crate) fn wait_for_lookup(&mut self, token: u32) {
        self.common.lookup = Some(token);
    }
}

impl Request {
    pub fn new() -> Request {
        Request::default()
    }

    fn ctx<'a>(
        common: &'a mut Common,
        profile: &'a Profile,
        worker: &'a mut Worker,
        host: &'a dyn Host,
    ) -> Ctx<'a> {
        Ctx {
            host,
            worker,
            profile,
            common,
        }
    }

    /// The request's headers: find the persisted server and hand it to Envoy.
    pub fn on_request_headers(
        &mut self,
        profile: &Profile,
        worker: &mut Worker,
        host: &dyn Host,
    ) -> RequestAction {
        let mut ctx = Self::ctx(&mut self.common, profile, worker, host);
        self.session = profile.persistence.on_request(&mut ctx);
        if ctx.common.lookup.is_some() {
            return RequestAction::WaitForLookup;
        }
        handoff::hand_off(&mut ctx);
        RequestAction::Continue
    }

    /// The token of the mirror lookup this request waits for, if any.
    pub fn lookup(&self) -> Option<u32> {
        self.common.lookup
    }

    /// The mirror lookup answered (`body`: etcd's answer, `None` when the call failed or
    /// timed out): finish the request half. The host then lets the request go on.
    pub fn on_lookup_answer(
        &mut self,
        body: Option<&[u8]>,
        profile: &Profile,
        worker: &mut Worker,
        host: &dyn Host,
    ) {
        self.common.lookup = None;
        let mut ctx = Self::ctx(&mut self.common, profile, worker, host);
        profile
            .persistence
            .on_lookup_answer(&mut self.session, &mut ctx, body);
        handoff::hand_off(&mut ctx);
    }

    /// The response's headers: learn which server answered, let the kind record or
    /// re-issue its persistence, and remember a named server that did not answer.
    pub fn on_response_headers(&mut self, profile: &Profile, worker: &mut Worker, host: &dyn Host) {
        let mut ctx = Self::ctx(&mut self.common, profile, worker, host);
        if !profile.persistence.learns_from_response() {
            // Nothing to learn; only Envoy's own response header must not leak.
            handoff::strip_response_header(&mut ctx);
            return;
        }
        let Some(answered) = handoff::answered(&mut ctx) else {
            return;
        };
        profile
            .persistence
            .on_response(&mut self.session, &mut ctx, answered);
        suspects::mark_unless_answered(&mut ctx, answered);
    }
}
