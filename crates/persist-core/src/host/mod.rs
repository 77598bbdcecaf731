//! The host seam: everything the persistence flow needs from Envoy, behind one small trait,
//! so that the same decisions run in the proxy-wasm module, in the native dynamic module and
//! in unit tests ([`recording::RecordingHost`]).
//!
//! A [`Host`] is the view of one request (its headers, properties) plus what every request
//! and the background tick share: the clock, randomness, shared data ([`SharedStore`]), and
//! stats. Every call returns `None`/`Err` on failure instead of panicking: a host error is a
//! counted `error`, never a failed request (README "Failure modes").
//!
//! Header values are bytes: a hostile header need not be UTF-8.

pub mod recording;

use crate::store::SharedStore;
use std::net::SocketAddr;
use std::time::Duration;

/// A host call failed (the host refused it, or the value was not there to change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError;

/// What kind of stat [`Host::define_metric`] defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// A stat defined through [`Host::define_metric`].
pub type MetricId = u32;

/// What the persistence flow asks of Envoy.
pub trait Host: SharedStore {
    /// The request header `name` (lower-case), if present.
    fn request_header(&self, name: &str) -> Option<Vec<u8>>;
    /// Replaces request header `name` with `value`.
    fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Removes request header `name` (every value).
    fn remove_request_header(&self, name: &str) -> Result<(), HostError>;

    /// The response header `name` (the first value), if present.
    fn response_header(&self, name: &str) -> Option<Vec<u8>>;
    /// Every value of response header `name` (e.g. each `Set-Cookie`).
    fn response_header_values(&self, name: &str) -> Vec<Vec<u8>>;
    /// Adds a value to response header `name`, keeping the others.
    fn add_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Removes response header `name` (every value).
    fn remove_response_header(&self, name: &str) -> Result<(), HostError>;

    /// A request or connection property, e.g. `["source", "address"]`.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;

    /// The address of the upstream host that answered (the property `upstream.address`).
    /// A host may answer it without the copy and parse of [`Host::property`].
    fn upstream_address(&self) -> Option<SocketAddr> {
        self.property(&["upstream", "address"])
            .and_then(|raw| crate::addr::parse(&raw))
    }

    /// Wall-clock milliseconds since the Unix epoch.
    fn now_ms(&self) -> Option<u64>;
    /// Fills `buf` from the host's random source; `false` when it has none.
    fn random(&self, buf: &mut [u8]) -> bool;

    /// Names `server` to Envoy's load balancer directly (the dynamic-module ABI's upstream
    /// override), `strict` answering 503 instead of choosing another host when it cannot be
    /// used. `None`: this host has no such call and the hand-off header is written instead
    /// (README "Hand-offs").
    fn override_upstream(
        &self,
        _server: SocketAddr,
        _strict: bool,
    ) -> Option<Result<(), HostError>> {
        None
    }

    /// Sets request-scoped filter state `name` (readable in access logs; README "Access
    /// logs and dashboards"). A host without filter state ignores it.
    fn set_filter_state(&self, _name: &str, _value: &[u8]) -> Result<(), HostError> {
        Ok(())
    }

    /// Whether [`Host::override_upstream`] names servers on this host. Only such a host can
    /// honour the configuration's `strict` ([`Profile::compile`](crate::flow::Profile::compile)
    /// refuses it elsewhere).
    fn has_upstream_override(&self) -> bool {
        false
    }

    /// Makes Envoy choose the request's route again, after this filter changed the request
    /// headers the route reads: what `clusters` needs to name a cluster to the route (README
    /// "Weighted clusters"). proxy-wasm does it on every request-header change, so the default
    /// has nothing to do; the dynamic-module ABI asks for it (`clear_route_cache`).
    fn rechoose_route(&self) -> Result<(), HostError> {
        Ok(())
    }

    /// Defines a stat once at configure time.
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<MetricId, HostError>;
    /// Adds `by` to a counter.
    fn increment_counter(&self, id: MetricId, by: u64) -> Result<(), HostError>;
    /// Adds `delta` (possibly negative) to a gauge.
    fn add_to_gauge(&self, id: MetricId, delta: i64) -> Result<(), HostError>;
    /// Sets a gauge.
    fn set_gauge(&self, id: MetricId, value: u64) -> Result<(), HostError>;

    /// The gRPC client the mirror uses (README "More than one Envoy"); `None` on hosts
    /// that have none (the mirror is then refused at configure time).
    fn grpc(&self) -> Option<&dyn GrpcHost> {
        None
    }
}

/// Where the mirror's gRPC calls go: the etcd cluster, by name (what the dynamic-module ABI's
/// HTTP callouts take) and as a serialized `GrpcService` (what proxy-wasm's gRPC calls take).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTarget {
    pub cluster: String,
    pub grpc_service: String,
}

/// Asynchronous gRPC through an Envoy cluster: the mirror's calls to etcd. Answers come
/// back through the host's callbacks, which hand the message to the flow by token.
pub trait GrpcHost {
    /// Starts a unary call; its token.
    fn call(
        &self,
        target: &GrpcTarget,
        service_name: &str,
        method: &str,
        message: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError>;
    /// Opens a stream and sends its first message; its token.
    fn open_stream(
        &self,
        target: &GrpcTarget,
        service_name: &str,
        method: &str,
        first: &[u8],
    ) -> Result<u32, HostError>;
    /// Cancels a stream.
    fn cancel_stream(&self, token: u32);
}
