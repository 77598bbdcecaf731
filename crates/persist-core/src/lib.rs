//! Pure logic of envoy-persist, free of proxy-wasm so it is tested natively:
//!
//! - [`config`]: the plugin JSON, parsed strictly and validated (README "Configuration reference").
//! - [`cookie`]: `Cookie` header reading and `Set-Cookie` rendering.
//! - [`codec`]: the four cookie encodings (README "Cookie formats and migration"); [`codec::sealed`] is where cookies are sealed.
//! - [`persistence`]: what to name on a request, what to send on a response.
//! - [`client_key`]: key extraction for the locally stored types and `consistent_hash`.
//! - [`table`]: the persist table in shared data (where entries expire and are evicted).
//! - [`mirror`]: the table mirrored through etcd (README "More than one Envoy").
//! - [`suspect`]: servers that failed to answer, shared by all workers.
//! - [`host`]: the [`host::Host`] trait: what the flow asks of Envoy, and a recording host for tests.
//! - [`store`]: the shared-data seam ([`store::SharedStore`]) and its host semantics.
//! - [`stats`]: counter names and local accumulation.
//! - [`addr`]: server addresses and the hand-off header value.

pub mod addr;
pub mod client_key;
pub mod codec;
pub mod config;
pub mod cookie;
pub mod flow;
pub mod header_pairs;
pub mod host;
pub mod mirror;
pub mod persistence;
pub mod stats;
pub mod store;
pub mod suspect;
pub mod table;
