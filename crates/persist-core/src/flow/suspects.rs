//! Suspect servers (README "Failover", `suspect_for`): a named server that did not answer
//! is not named again for a while, by any worker. The list itself is
//! [`crate::suspect::SuspectList`]; this is where the flow consults and feeds it.

use super::Ctx;
use crate::config::Handoff;
use crate::stats::Counter;
use std::net::SocketAddr;

pub(crate) fn is_suspect(ctx: &mut Ctx<'_>, server: SocketAddr) -> bool {
    if ctx.worker.suspects.is_empty() {
        return false;
    }
    let now = ctx.now_ms();
    ctx.worker.suspects.is_suspect(server, now)
}

/// The named server did not answer: no worker names it again for `suspect_for`.
///
/// Only under `override_host`, whose LB policy ignores health, so that naming a dead
/// server costs each request a failed attempt and a retry. Under `stateful_session` Envoy
/// skips a host its health checking took out at no cost, and a mismatch can be transient
/// (right after Envoy starts, a worker may not have the first health check results yet):
/// marking the server suspect there would only move more sessions.
pub(crate) fn mark_unless_answered(ctx: &mut Ctx<'_>, answered: SocketAddr) {
    let config = &ctx.profile.config;
    if config.handoff != Handoff::OverrideHost || ctx.common.overridden {
        return;
    }
    let Some(named) = ctx.common.named.filter(|n| *n != answered) else {
        return;
    };
    let suspect_for = config.suspect_for;
    if suspect_for.is_zero() {
        return;
    }
    let now_ms = ctx.now_ms();
    let until = now_ms.saturating_add(u64::try_from(suspect_for.as_millis()).unwrap_or(u64::MAX));
    let key = &ctx.profile.suspect_key;
    if ctx
        .worker
        .suspects
        .mark(ctx.host, key, named, until, now_ms)
        .is_err()
    {
        ctx.count(Counter::Error);
    }
}
