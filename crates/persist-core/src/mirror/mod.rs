//! The persist table mirrored through etcd (README "More than one Envoy"), so that a client keeps its server
//! whichever Envoy of the same profile it reaches, and across their restarts.
//!
//! # How it works
//! The filter speaks etcd's v3 gRPC API ([`proto`], hand-written `prost` messages) through
//! an Envoy cluster with HTTP/2: the wasm module through proxy-wasm's gRPC client, the native
//! module through the dynamic-module ABI's HTTP callouts and streams, framing the messages
//! itself ([`grpc_frame`]); nothing else is needed.
//!
//! - **Write** ([`writer`]): a response that changed the local table (new binding,
//!   rebinding, `timeout/4` refresh) queues the key in its worker's outbox; the worker's
//!   tick (every 100 ms) sends the outbox as one `KV/Txn` of puts (at most 128), one call in
//!   flight at a time. The request never waits for it.
//! - **Expiry** ([`lease`]): each put carries the lease of its time bucket, granted once per
//!   bucket, so a key leaves etcd within one bucket width after it lapses unused.
//! - **Read** ([`follow`]): one worker per Envoy ([`role`]) loads the profile's key range,
//!   then watches it from the next revision, and merges every put into the local table
//!   ([`crate::table::Table::merge`]) in etcd's order: the last writer wins everywhere.
//! - **Lookup on a miss** ([`follow::lookup_request`]): a request whose key is not in the
//!   local table asks etcd for that one key and waits for the answer at most
//!   `mirror.timeout`; that covers the moments a watch has not delivered yet (an Envoy
//!   starting, a client jumping Envoys right after its first response).
//! - **Failure**: every call is asynchronous and bounded; a failure is counted
//!   (`mirror_error`), the local table goes on alone, and the calls resume with a backoff
//!   ([`backoff`]).
//!
//! Keys and values ([`record`]): `<prefix><profile>/<secret id>/<mac hex>` → `<ip:port>
//! <created> <last use>`, the MAC a keyed hash of the client key under `mirror.secret`.

pub mod backoff;
pub mod driver;
pub mod follow;
pub mod grpc_frame;
pub mod lease;
pub mod proto;
pub mod record;
pub mod role;
pub mod writer;
