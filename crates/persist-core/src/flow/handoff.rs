//! Handing the persisted server to Envoy, and learning which server really answered
//! (README "Hand-offs"). The filter never picks a server itself: it names one, and Envoy's
//! load balancer decides whether that host may be used.

use super::Ctx;
use crate::config::Handoff;
use crate::host::Host;
use crate::stats::Counter;
use std::net::SocketAddr;

/// Under `stateful_session`, a named request answered without Envoy's response header is
/// taken to be answered by the named server; every `CHECK_EVERY`th one per worker reads who
/// really answered, so that a hand-off Envoy ignores (the stateful_session filter missing,
/// or placed before this filter) is counted as `handoff_ignored`, never silent.
pub const CHECK_EVERY: u32 = 8;

/// Writes the hand-off for the named server (or names it through the host's upstream
/// override), and removes any client copy of the hand-off header: no client chooses a
/// server.
pub(crate) fn hand_off(ctx: &mut Ctx<'_>) {
    let config = &ctx.profile.config;
    let header = config.upstream_header.as_str();
    let result = match ctx.common.named {
        Some(server) => match ctx.host.override_upstream(server, config.strict) {
            Some(result) => {
                ctx.common.overridden = true;
                result.and_then(|()| remove_client_copy(ctx.host, header))
            }
            None => ctx.host.set_request_header(
                header,
                ctx.worker.handoff_values.value(config.handoff, server),
            ),
        },
        None => remove_client_copy(ctx.host, header),
    };
    // The cluster header is handled even when the server's hand-off failed.
    let cluster = hand_off_cluster(ctx);
    if result.is_err() || cluster.is_err() {
        ctx.count(Counter::Error);
    }
}

/// With `clusters`: names the persisted cluster to the route in `clusters.header` (the
/// route's `cluster_header`), or removes the header: no client chooses a cluster (README
/// "Weighted clusters"). The removal is unconditional: Envoy chose the request's route
/// before any filter ran, from the headers the client sent, and a filter that removed a
/// client copy before this one (the examples' header_mutation) left that route in place;
/// changing a request header makes Envoy choose the route again (by itself under proxy-wasm,
/// when asked through the dynamic-module ABI: [`Host::rechoose_route`]).
fn hand_off_cluster(ctx: &mut Ctx<'_>) -> Result<(), crate::host::HostError> {
    let Some(clusters) = &ctx.profile.config.clusters else {
        return Ok(());
    };
    match ctx.common.cluster.and_then(|tag| clusters.name(tag)) {
        Some(name) => ctx
            .host
            .set_request_header(&clusters.header, name.as_bytes()),
        None => ctx.host.remove_request_header(&clusters.header),
    }?;
    ctx.host.rechoose_route()
}

/// Removing a header makes Envoy recompute the route: look first (an absent header costs
/// no copy).
fn remove_client_copy(host: &dyn Host, header: &str) -> Result<(), crate::host::HostError> {
    if host.request_header(header).is_some() {
        host.remove_request_header(header)
    } else {
        Ok(())
    }
}

fn upstream_address(host: &dyn Host) -> Option<SocketAddr> {
    host.upstream_address()
}

/// Whether no hand-off header is in play for this request: the server was named through
/// the host's upstream override, or the host has one (then it never writes the header, and
/// no stateful_session filter after this one answers with it).
fn without_header(ctx: &Ctx<'_>) -> bool {
    ctx.common.overridden || ctx.host.has_upstream_override()
}

/// Removes the stateful_session filter's response header before the client sees it.
pub(crate) fn strip_response_header(ctx: &mut Ctx<'_>) {
    if ctx.profile.config.handoff == Handoff::StatefulSession && !without_header(ctx) {
        let _ = ctx
            .host
            .remove_response_header(&ctx.profile.config.upstream_header);
    }
}

/// The server that answered, after retries; `None` for a local reply without upstream.
pub(crate) fn answered(ctx: &mut Ctx<'_>) -> Option<SocketAddr> {
    if without_header(ctx) {
        return upstream_address(ctx.host);
    }
    let config = &ctx.profile.config;
    match config.handoff {
        Handoff::StatefulSession => match ctx.host.response_header(&config.upstream_header) {
            // Envoy's stateful_session filter writes this header exactly when the host
            // differs from the requested one; it must not reach the client.
            Some(raw) => {
                if ctx
                    .host
                    .remove_response_header(&config.upstream_header)
                    .is_err()
                {
                    ctx.count(Counter::Error);
                }
                ctx.worker
                    .handoff_values
                    .session_server(&raw)
                    .or_else(|| upstream_address(ctx.host))
            }
            None => match ctx.common.named {
                Some(named) => Some(checked(ctx, named)),
                None => upstream_address(ctx.host),
            },
        },
        Handoff::OverrideHost => upstream_address(ctx.host),
    }
}

/// A named request without Envoy's response header: the named server answered, unless the
/// hand-off never reached Envoy (see [`CHECK_EVERY`]).
fn checked(ctx: &mut Ctx<'_>, named: SocketAddr) -> SocketAddr {
    ctx.worker.unchecked_answers = ctx.worker.unchecked_answers.saturating_add(1);
    if ctx.worker.unchecked_answers < CHECK_EVERY {
        return named;
    }
    ctx.worker.unchecked_answers = 0;
    match upstream_address(ctx.host) {
        Some(actual) if actual != named && ctx.response_from_upstream() => {
            ctx.worker.counts.handoff_ignored += 1;
            actual
        }
        _ => named,
    }
}
