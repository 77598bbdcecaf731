//! envoy-persist as an Envoy **dynamic module**: a native shared library loaded by
//! `envoy.filters.http.dynamic_modules`, running the same `persist-core` as the wasm module
//! (README "Native module").
//!
//! - [`ffi`]: the ABI declarations this module uses (written here from Envoy's public header).
//! - [`host`]: `persist_core::host::Host` over those callbacks.
//! - [`store`]: the process-wide shared data, with proxy-wasm's CAS semantics.
//! - [`addrs`]: server addresses as text, cached per worker thread.
//! - `grpc`: the mirror's gRPC calls to etcd over the ABI's HTTP callouts and streams.
//! - `background` (not in unit tests): the mirror's work on Envoy's main thread, one per
//!   configuration with `mirror`.
//! - `workers`: each worker thread's compiled profile and `persist_core::flow::Worker`, per
//!   filter configuration, and the background tick run from the request path.
//! - `hooks` (not in unit tests): the exported event hooks. Each one runs its body under
//!   `catch_unwind`: a panic fails open (the request goes on without persistence, `error` is
//!   counted) and never unwinds into Envoy.

// Private: the raw-pointer wrappers and the Host over them are reached only through the
// exported hooks (absent from unit-test builds, hence the allow).
#![cfg_attr(test, allow(dead_code))]

pub mod addrs;
mod ffi;
mod grpc;
pub mod guard;
mod host;
pub mod store;
mod workers;

#[cfg(not(test))]
mod background;
#[cfg(not(test))]
mod hooks;
#[cfg(not(test))]
mod logger;
