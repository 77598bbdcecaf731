//! The persistence flow, whatever the host: what a request, its response and the worker's
//! background tick do. A host (the proxy-wasm module, the native dynamic module, the
//! recording host of the unit tests) only forwards its callbacks here:
//!
//! - configure: [`Profile::compile`] once per configuration, [`Worker::new`] per worker;
//! - request headers: [`Request::on_request_headers`] (may wait for a mirror lookup:
//!   [`Request::on_lookup_answer`] resumes it);
//! - response headers: [`Request::on_response_headers`];
//! - every second: [`Worker::tick`]; with a mirror every 100 ms:
//!   [`crate::mirror::driver::Driver::tick`].
//!
//! Every request does the same three things, whatever the kind (README "How it works"):
//! drop a client copy of the hand-off header and name the persisted server if there is one
//! ([`handoff`]); on the response, find out which server answered and let the kind record
//! or re-issue its persistence; remember servers that failed to answer ([`suspects`]).
//! What differs per kind is in [`crate::persistence`]; the flow never names a kind.

pub mod handoff;
mod handoff_values;
pub use handoff_values::HandoffValues;
mod profile;
pub(crate) use profile::define_stat;
mod request;
pub mod suspects;
mod worker;

pub use profile::Profile;
pub use request::{Ctx, Request, RequestAction, DECISION_STATE, TYPE_STATE};
pub use worker::Worker;

/// The background tick of every worker.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(1);
/// With `mirror`: the outbox goes to etcd within this, so a binding reaches the other
/// Envoys well within a second. Everything else still runs once per [`TICK`].
pub const MIRROR_TICK: std::time::Duration = std::time::Duration::from_millis(100);

#[cfg(test)]
mod tests;
