//! envoy-persist: the proxy-wasm entry point. This crate is only host glue — reading and
//! writing headers, shared data, time, stats — around the logic in `persist-core`.
//!
//! - [`root`]: configuration (per VM), the worker's shared state, the stats/suspect tick.
//! - [`http`]: the per-request filter: name the persisted server, learn who answered.
//! - [`keys`]: reading each type's key from the request.
//! - [`mirror`]: the etcd calls of the mirror (SPEC 2.4).
//! - [`host`]: the few host calls used, wrapped so that none can panic on request data.

mod host;
mod http;
mod keys;
mod mirror;
mod root;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(root::PersistRoot::default()));
}}
