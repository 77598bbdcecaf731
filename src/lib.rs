//! envoy-persist: the proxy-wasm entry point. This crate is host glue only: every decision
//! is made in `persist-core` ([`persist_core::flow`]); here the proxy-wasm callbacks are
//! forwarded to it, through a [`persist_core::host::Host`] made of proxy-wasm host calls.
//!
//! - [`state`]: the root context of each VM: the compiled profile, the worker's state, the
//!   background tick and the mirror's gRPC callbacks.
//! - [`http`]: the per-request context.
//! - [`host`]: the proxy-wasm [`persist_core::host::Host`]: the only place that calls the SDK.

mod host;
mod http;
mod state;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(state::PersistRoot::default()));
}}
