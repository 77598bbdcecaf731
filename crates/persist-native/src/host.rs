//! [`NativeHost`]: `persist_core::host::Host` over Envoy's dynamic-module callbacks.
//!
//! One value per event hook: at configuration time it holds Envoy's filter *configuration*
//! (stats can be defined then, and only then); in a request hook it holds the stream's
//! *filter* (headers, attributes, the upstream override, stat updates). Calls that need the
//! other pointer fail with `HostError` instead of reaching Envoy with a wrong one.

use crate::addrs;
use crate::ffi::{self, Attribute, Caller, ConfigEnvoyPtr, FilterEnvoyPtr, HeaderType, MetricOp};
use crate::grpc;
use crate::store::NativeStore;
use persist_core::host::{GrpcHost, GrpcTarget, Host, HostError, MetricId, MetricKind};
use persist_core::store::{SharedStore, StoreError};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A stat defined at configuration: its kind, name and Envoy's id for it.
pub type Defined = (MetricKind, String, MetricId);

/// How [`Host::define_metric`] works on this host. Envoy defines stats only while a filter
/// configuration is created, but every worker compiles its own profile (the profile keeps
/// per-worker caches): at configuration the stats are defined and recorded, on a worker the
/// same names are looked up.
#[derive(Clone, Copy)]
pub enum Stats<'a> {
    /// A stream hook: no stat is defined.
    None,
    /// `config_new`: define through Envoy, and record.
    Define(&'a std::cell::RefCell<Vec<Defined>>),
    /// A worker compiling the profile: the ids recorded at configuration.
    Lookup(&'a [Defined]),
}

pub struct NativeHost<'a> {
    config: ConfigEnvoyPtr,
    filter: FilterEnvoyPtr,
    stats: Stats<'a>,
    /// This hook's view of the request / response headers ([`ffi::get_headers`]), taken on
    /// the first read and dropped when the module changes that map.
    request_headers: RefCell<Option<Vec<ffi::EnvoyHttpHeader>>>,
    response_headers: RefCell<Option<Vec<ffi::EnvoyHttpHeader>>>,
}

impl<'a> NativeHost<'a> {
    /// The host of `envoy_dynamic_module_on_http_filter_config_new`, recording every stat it
    /// defines into `defined`.
    pub fn for_config(
        config: ConfigEnvoyPtr,
        defined: &'a std::cell::RefCell<Vec<Defined>>,
    ) -> NativeHost<'a> {
        NativeHost {
            config,
            filter: std::ptr::null_mut(),
            stats: Stats::Define(defined),
            request_headers: RefCell::new(None),
            response_headers: RefCell::new(None),
        }
    }

    /// The host of a stream's hooks.
    pub fn for_filter(filter: FilterEnvoyPtr) -> NativeHost<'static> {
        NativeHost {
            config: std::ptr::null_mut(),
            filter,
            stats: Stats::None,
            request_headers: RefCell::new(None),
            response_headers: RefCell::new(None),
        }
    }

    /// The host of the mirror's background work on Envoy's main thread
    /// ([`crate::background`]): the configuration's stats, callouts and stream; no request.
    pub fn for_background(config: ConfigEnvoyPtr) -> NativeHost<'static> {
        NativeHost {
            config,
            filter: std::ptr::null_mut(),
            stats: Stats::None,
            request_headers: RefCell::new(None),
            response_headers: RefCell::new(None),
        }
    }

    /// The host of a stream's hook compiling the worker's profile: stats resolve to the ids
    /// defined at configuration.
    pub fn for_worker(filter: FilterEnvoyPtr, defined: &'a [Defined]) -> NativeHost<'a> {
        NativeHost {
            config: std::ptr::null_mut(),
            filter,
            stats: Stats::Lookup(defined),
            request_headers: RefCell::new(None),
            response_headers: RefCell::new(None),
        }
    }

    fn filter(&self) -> Result<FilterEnvoyPtr, HostError> {
        if self.filter.is_null() {
            Err(HostError)
        } else {
            Ok(self.filter)
        }
    }

    fn headers(&self, kind: HeaderType) -> &RefCell<Option<Vec<ffi::EnvoyHttpHeader>>> {
        match kind {
            HeaderType::RequestHeader => &self.request_headers,
            HeaderType::ResponseHeader => &self.response_headers,
        }
    }

    /// Calls `f` with each value of header `name` (ASCII case-insensitive, as Envoy's
    /// lookup by name), in order, until it returns `false`.
    fn each_value(&self, kind: HeaderType, name: &str, f: impl FnMut(&[u8]) -> bool) {
        let Ok(filter) = self.filter() else {
            return;
        };
        let Ok(mut view) = self.headers(kind).try_borrow_mut() else {
            return;
        };
        if view.is_none() {
            *view = ffi::get_headers(filter, kind);
        }
        if let Some(headers) = view.as_deref() {
            // SAFETY: Envoy's buffers of this hook's header map, unchanged since the view was
            // taken (every change through this host drops the view first).
            unsafe { values_named(headers, name, f) }
        }
    }

    fn first_value(&self, kind: HeaderType, name: &str) -> Option<Vec<u8>> {
        let mut out = None;
        self.each_value(kind, name, |v| {
            out = Some(v.to_vec());
            false
        });
        out
    }

    /// The module is about to change map `kind`: Envoy's buffers of it may move.
    fn changing(&self, kind: HeaderType) {
        if let Ok(mut view) = self.headers(kind).try_borrow_mut() {
            *view = None;
        }
    }

    /// Who calls Envoy from this hook: the stream's filter, or outside any stream the
    /// configuration.
    fn caller(&self) -> Result<Caller, HostError> {
        if !self.filter.is_null() {
            Ok(Caller::Filter(self.filter))
        } else if !self.config.is_null() {
            Ok(Caller::Config(self.config))
        } else {
            Err(HostError)
        }
    }

    fn metric(&self, op: MetricOp, id: MetricId, value: u64) -> Result<(), HostError> {
        ok(ffi::update_metric(self.caller()?, op, id as usize, value))
    }
}

/// Calls `f` with the value of each header named `name` (ASCII case-insensitive, as Envoy's
/// lookup by name) in `headers`, in order, until it returns `false`.
///
/// # Safety
/// Every buffer of `headers` must be readable (or null) while this runs.
unsafe fn values_named(
    headers: &[ffi::EnvoyHttpHeader],
    name: &str,
    mut f: impl FnMut(&[u8]) -> bool,
) {
    for h in headers {
        // SAFETY: as the caller guarantees.
        let key = unsafe { ffi::EnvoyBuffer::new(h.key_ptr, h.key_length).as_slice() };
        if key.eq_ignore_ascii_case(name.as_bytes()) {
            // SAFETY: as the caller guarantees.
            let value = unsafe { ffi::EnvoyBuffer::new(h.value_ptr, h.value_length).as_slice() };
            if !f(value) {
                break;
            }
        }
    }
}

/// The id recorded for (`kind`, `name`).
pub fn find_defined(defined: &[Defined], kind: MetricKind, name: &str) -> Option<MetricId> {
    defined
        .iter()
        .find(|(k, n, _)| *k == kind && n == name)
        .map(|(_, _, id)| *id)
}

fn ok(done: bool) -> Result<(), HostError> {
    if done {
        Ok(())
    } else {
        Err(HostError)
    }
}

/// Where a property path is read from. proxy-wasm names properties by path; the dynamic
/// module ABI by attribute id, plus dynamic metadata by namespace and key.
#[derive(Debug, PartialEq, Eq)]
pub enum PropertySource<'a> {
    Attribute(Attribute),
    DynamicMetadata {
        ns: &'a str,
        key: &'a str,
    },
    /// `xds.cluster_name`: the ABI's cluster-name callback.
    ClusterName,
}

/// The ABI source of a property path the core (or a `custom.source.property`) may name;
/// `None` for paths this module cannot read (the property is then absent).
pub fn property_source<'a>(path: &[&'a str]) -> Option<PropertySource<'a>> {
    use Attribute::*;
    let attr = match path {
        ["metadata", "filter_metadata", ns, key] => {
            return Some(PropertySource::DynamicMetadata { ns, key })
        }
        ["source", "address"] => SourceAddress,
        ["destination", "address"] => DestinationAddress,
        ["upstream", "address"] => UpstreamAddress,
        ["connection", "sha256_peer_certificate_digest"] => ConnectionSha256PeerCertificateDigest,
        ["connection", "requested_server_name"] => ConnectionRequestedServerName,
        ["connection", "tls_version"] => ConnectionTlsVersion,
        ["connection", "subject_peer_certificate"] => ConnectionSubjectPeerCertificate,
        ["request", "path"] => RequestPath,
        ["request", "url_path"] => RequestUrlPath,
        ["request", "host"] => RequestHost,
        ["request", "scheme"] => RequestScheme,
        ["request", "method"] => RequestMethod,
        ["request", "referer"] => RequestReferer,
        ["request", "useragent"] => RequestUserAgent,
        ["request", "id"] => RequestId,
        ["request", "protocol"] => RequestProtocol,
        ["request", "query"] => RequestQuery,
        // Whether an upstream produced the response (the flow issues nothing from local replies).
        ["response", "code_details"] => ResponseCodeDetails,
        // The cluster the route chose (README "Weighted clusters"): its own callback.
        ["xds", "cluster_name"] => return Some(PropertySource::ClusterName),
        _ => return None,
    };
    Some(PropertySource::Attribute(attr))
}

/// The prefix Envoy gives the wasm module's filter state (`proxy_set_property` of a
/// one-segment path stores it as `wasm.<name>`).
const FILTER_STATE_PREFIX: &[u8] = b"wasm.";

/// Runs `f` on the filter-state key of the core's state `name`: the key Envoy gives the wasm
/// module's. Built on the stack (this runs twice on every request; a `format!` cost about
/// 0.8k instructions each, BENCHMARKS.md "Native module").
pub fn with_filter_state_key<R>(name: &str, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buf = [0u8; 64];
    let len = FILTER_STATE_PREFIX.len() + name.len();
    match buf.get_mut(..len) {
        Some(key) => {
            let (prefix, rest) = key.split_at_mut(FILTER_STATE_PREFIX.len());
            prefix.copy_from_slice(FILTER_STATE_PREFIX);
            rest.copy_from_slice(name.as_bytes());
            f(key)
        }
        None => f(&[FILTER_STATE_PREFIX, name.as_bytes()].concat()),
    }
}

impl SharedStore for NativeHost<'_> {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        NativeStore::global().get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        NativeStore::global().set(key, value, cas)
    }
}

impl Host for NativeHost<'_> {
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.first_value(HeaderType::RequestHeader, name)
    }

    fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.changing(HeaderType::RequestHeader);
        ok(ffi::set_header(
            self.filter()?,
            HeaderType::RequestHeader,
            name,
            value,
        ))
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        self.changing(HeaderType::RequestHeader);
        ok(ffi::remove_header(
            self.filter()?,
            HeaderType::RequestHeader,
            name,
        ))
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.first_value(HeaderType::ResponseHeader, name)
    }

    fn response_header_values(&self, name: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.each_value(HeaderType::ResponseHeader, name, |v| {
            out.push(v.to_vec());
            true
        });
        out
    }

    fn add_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.changing(HeaderType::ResponseHeader);
        ok(ffi::add_header(
            self.filter()?,
            HeaderType::ResponseHeader,
            name,
            value,
        ))
    }

    fn remove_response_header(&self, name: &str) -> Result<(), HostError> {
        self.changing(HeaderType::ResponseHeader);
        ok(ffi::remove_header(
            self.filter()?,
            HeaderType::ResponseHeader,
            name,
        ))
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let f = self.filter().ok()?;
        match property_source(path)? {
            PropertySource::Attribute(id) => ffi::attribute_string(f, id),
            PropertySource::DynamicMetadata { ns, key } => ffi::dynamic_metadata(f, ns, key),
            PropertySource::ClusterName => ffi::cluster_name(f),
        }
    }

    fn now_ms(&self) -> Option<u64> {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
        u64::try_from(d.as_millis()).ok()
    }

    fn random(&self, buf: &mut [u8]) -> bool {
        getrandom::getrandom(buf).is_ok()
    }

    fn override_upstream(&self, server: SocketAddr, strict: bool) -> Option<Result<(), HostError>> {
        Some(self.filter().and_then(|f| {
            ok(addrs::with_text(server, |text| {
                ffi::set_upstream_override_host(f, text, strict)
            }))
        }))
    }

    fn upstream_address(&self) -> Option<SocketAddr> {
        let f = self.filter().ok()?;
        ffi::with_attribute(f, Attribute::UpstreamAddress, |raw| addrs::parse(raw?))
    }

    fn has_upstream_override(&self) -> bool {
        true
    }

    /// Header changes leave the route Envoy chose in place until it is asked to choose
    /// again (README "Weighted clusters").
    fn rechoose_route(&self) -> Result<(), HostError> {
        ffi::clear_route_cache(self.filter()?);
        Ok(())
    }

    /// Under the key the wasm module's state gets from Envoy (`wasm.` + `name`): one
    /// access-log format serves both builds (README "Access logs and dashboards").
    fn set_filter_state(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        let f = self.filter()?;
        ok(with_filter_state_key(name, |key| {
            ffi::set_filter_state(f, key, value)
        }))
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<MetricId, HostError> {
        match self.stats {
            Stats::None => Err(HostError),
            Stats::Lookup(defined) => find_defined(defined, kind, name).ok_or(HostError),
            Stats::Define(defined) => {
                if let Some(id) = find_defined(&defined.borrow(), kind, name) {
                    return Ok(id);
                }
                if self.config.is_null() {
                    return Err(HostError);
                }
                let id = ffi::define_metric(self.config, kind == MetricKind::Gauge, name)
                    .ok_or(HostError)?;
                let id = MetricId::try_from(id).map_err(|_| HostError)?;
                defined.borrow_mut().push((kind, name.to_string(), id));
                Ok(id)
            }
        }
    }

    fn increment_counter(&self, id: MetricId, by: u64) -> Result<(), HostError> {
        self.metric(MetricOp::Increment, id, by)
    }

    fn add_to_gauge(&self, id: MetricId, delta: i64) -> Result<(), HostError> {
        if delta >= 0 {
            self.metric(MetricOp::GaugeUp, id, delta.unsigned_abs())
        } else {
            self.metric(MetricOp::GaugeDown, id, delta.unsigned_abs())
        }
    }

    fn set_gauge(&self, id: MetricId, value: u64) -> Result<(), HostError> {
        self.metric(MetricOp::GaugeSet, id, value)
    }

    /// The mirror's calls to etcd (README "Native module"): HTTP callouts and streams.
    fn grpc(&self) -> Option<&dyn GrpcHost> {
        Some(self)
    }
}

/// gRPC over the ABI's HTTP callouts ([`grpc`]): a request's lookup through its filter, the
/// background's calls and watch through the configuration.
impl GrpcHost for NativeHost<'_> {
    fn call(
        &self,
        target: &GrpcTarget,
        service_name: &str,
        method: &str,
        message: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let caller = self.caller()?;
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        grpc::call(
            caller,
            &target.cluster,
            &grpc::path(service_name, method),
            message,
            timeout_ms,
        )
    }

    /// Only outside a stream: a request's stream would end with the request.
    fn open_stream(
        &self,
        target: &GrpcTarget,
        service_name: &str,
        method: &str,
        first: &[u8],
    ) -> Result<u32, HostError> {
        let Caller::Config(config) = self.caller()? else {
            return Err(HostError);
        };
        grpc::open_stream(
            config,
            &target.cluster,
            &grpc::path(service_name, method),
            first,
        )
    }

    fn cancel_stream(&self, token: u32) {
        if let Ok(Caller::Config(config)) = self.caller() {
            ffi::config_reset_stream(config, u64::from(token));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_by_name() {
        let pairs: [(&str, &str); 6] = [
            (":path", "/x"),
            ("cookie", "a=1"),
            ("set-cookie", "A=1"),
            ("x-empty", ""),
            ("Set-Cookie", "B=2"),
            ("set-cookie", "C=3"),
        ];
        let headers: Vec<ffi::EnvoyHttpHeader> = pairs
            .iter()
            .map(|(k, v)| ffi::EnvoyHttpHeader {
                key_ptr: k.as_ptr().cast(),
                key_length: k.len(),
                value_ptr: v.as_ptr().cast(),
                value_length: v.len(),
            })
            .collect();
        let all = |name: &str| {
            let mut out = Vec::new();
            // SAFETY: the buffers point into `pairs`, alive here.
            unsafe {
                values_named(&headers, name, |v| {
                    out.push(String::from_utf8(v.to_vec()).unwrap());
                    true
                })
            };
            out
        };
        assert_eq!(all("set-cookie"), ["A=1", "B=2", "C=3"]);
        assert_eq!(all("SET-COOKIE"), ["A=1", "B=2", "C=3"]);
        assert_eq!(all(":path"), ["/x"]);
        assert_eq!(all("x-empty"), [""]);
        assert!(all("x-absent").is_empty());
        assert!(all("cookie2").is_empty());
        let mut first = Vec::new();
        // SAFETY: as above.
        unsafe {
            values_named(&headers, "set-cookie", |v| {
                first.push(v.to_vec());
                false
            })
        };
        assert_eq!(first, [b"A=1".to_vec()]);
    }

    #[test]
    fn filter_state_keys_are_the_wasm_modules() {
        let key = |name: &str| with_filter_state_key(name, <[u8]>::to_vec);
        assert_eq!(
            key(persist_core::flow::DECISION_STATE),
            b"wasm.persist.decision"
        );
        assert_eq!(key(persist_core::flow::TYPE_STATE), b"wasm.persist.type");
        // A name longer than the stack buffer takes the heap, same key.
        let long = "n".repeat(100);
        assert_eq!(key(&long), [&b"wasm."[..], long.as_bytes()].concat());
        assert_eq!(key(""), b"wasm.");
    }

    #[test]
    fn property_paths_map_to_attributes() {
        assert_eq!(
            property_source(&["source", "address"]),
            Some(PropertySource::Attribute(Attribute::SourceAddress))
        );
        assert_eq!(
            property_source(&["upstream", "address"]),
            Some(PropertySource::Attribute(Attribute::UpstreamAddress))
        );
        assert_eq!(
            property_source(&["connection", "sha256_peer_certificate_digest"]),
            Some(PropertySource::Attribute(
                Attribute::ConnectionSha256PeerCertificateDigest
            ))
        );
        assert_eq!(
            property_source(&[
                "metadata",
                "filter_metadata",
                "envoy.filters.http.lua",
                "key"
            ]),
            Some(PropertySource::DynamicMetadata {
                ns: "envoy.filters.http.lua",
                key: "key"
            })
        );
        assert_eq!(
            property_source(&["xds", "cluster_name"]),
            Some(PropertySource::ClusterName)
        );
        for unknown in [
            &["source"][..],
            &["nope", "address"],
            &["metadata", "filter_metadata", "ns"],
            &[],
        ] {
            assert_eq!(property_source(unknown), None, "{unknown:?}");
        }
    }
}
