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
    /// The allowed cluster named to the route (README "Weighted clusters").
    pub cluster: Option<u32>,
    /// The tag of the cluster that answered (read at most once).
    pub answered_cluster: Option<u32>,
    /// Wall-clock milliseconds, read at most once per request.
    pub now_ms: Option<u64>,
    /// With `mirror`: the token of the etcd lookup the request waits for.
    pub lookup: Option<u32>,
    /// Whether the response came from an upstream (read at most once, and only when the
    /// kind is about to issue, learn or rebind something).
    pub from_upstream: Option<bool>,
    /// The request's persistence decision so far, for the access log.
    pub decision: Option<Counter>,
}

/// The decision an access log shows when a request saw several outcomes: an error first,
/// then a rebinding, an invalid cookie, a new binding, a hit, a miss.
fn weight(c: Counter) -> u8 {
    match c {
        Counter::Error => 6,
        Counter::Rebind => 5,
        Counter::Invalid => 4,
        Counter::New => 3,
        Counter::Hit => 2,
        Counter::Miss => 1,
        Counter::Expired | Counter::Evicted => 0,
    }
}

/// Filter state keys of the access log (README "Access logs and dashboards"); Envoy shows
/// them as `%FILTER_STATE(wasm.persist.decision:PLAIN)%` and `…(wasm.persist.type:PLAIN)%`.
pub const DECISION_STATE: &str = "persist.decision";
pub const TYPE_STATE: &str = "persist.type";

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
        self.note(c);
    }

    /// Records `c` as the request's decision if it outweighs the one so far (see
    /// [`weight`]); [`Ctx::count`] does it for every count.
    pub fn note(&mut self, c: Counter) {
        if self.common.decision.is_none_or(|d| weight(c) > weight(d)) && weight(c) > 0 {
            self.common.decision = Some(c);
        }
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
    /// `cluster` is the tag of the cluster the persistence recorded (0: none): with
    /// `clusters`, an allowed one is named to the route too, even when the server is
    /// suspect (the client stays on its cluster); one no longer allowed names nothing, and
    /// the client rebinds (README "Weighted clusters").
    pub fn prefer(&mut self, persisted: SocketAddr, cluster: u32) {
        if let Some(clusters) = &self.profile.config.clusters {
            if cluster != 0 {
                if clusters.name(cluster).is_none() {
                    return;
                }
                self.common.cluster = Some(cluster);
            }
        }
        if !suspects::is_suspect(self, persisted) {
            self.common.named = Some(persisted);
            self.count(Counter::Hit);
        }
    }

    /// With `clusters`, the tag of the allowed cluster that answered (0: another one, or
    /// none); `None` without `clusters`. The named server answering means the named
    /// cluster did (the route took it from the header); otherwise Envoy says which
    /// cluster the request went to.
    pub fn answered_cluster(&mut self, answered: SocketAddr) -> Option<u32> {
        let clusters = self.profile.config.clusters.as_ref()?;
        if let Some(known) = self.common.answered_cluster {
            return Some(known);
        }
        let tag = match (self.common.cluster, self.common.named) {
            (Some(tag), Some(named)) if named == answered => tag,
            _ => self
                .host
                .property(&["xds", "cluster_name"])
                .map_or(0, |name| clusters.tag_of(&name)),
        };
        self.common.answered_cluster = Some(tag);
        Some(tag)
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
        } else if let Some(answered) = handoff::answered(&mut ctx) {
            profile
                .persistence
                .on_response(&mut self.session, &mut ctx, answered);
            suspects::mark_unless_answered(&mut ctx, answered);
        }
        record_decision(&mut ctx);
    }
}

/// The request's decision and the profile's type, as filter state for the access log.
fn record_decision(ctx: &mut Ctx<'_>) {
    let Some(decision) = ctx.common.decision else {
        return;
    };
    if !ctx.profile.config.access_log_state {
        return;
    }
    let kind = ctx.profile.config.kind.type_name();
    let host = ctx.host;
    if host
        .set_filter_state(DECISION_STATE, decision.name().as_bytes())
        .and_then(|()| host.set_filter_state(TYPE_STATE, kind.as_bytes()))
        .is_err()
    {
        ctx.worker.count(Counter::Error);
    }
}
