//! The mirror's gRPC calls to etcd over the ABI's HTTP callouts and streams (README "Native
//! module"): a POST of one framed message to `/<service>/<method>` on the etcd cluster, with
//! gRPC's headers; the answer's body unframed ([`persist_core::mirror::grpc_frame`]).
//!
//! - A unary call from a request (the lookup of a key the local table misses) is the
//!   request's filter callout, answered on its worker thread, dropped with the request.
//! - A unary call from the background (puts, lease grants, load pages) is the
//!   configuration's callout; the watch is the configuration's stream. Both are answered on
//!   Envoy's main thread ([`crate::background`]).

use crate::ffi::{self, Caller, EnvoyBuffer, EnvoyHttpHeader, ModuleHttpHeader};
use persist_core::host::HostError;
use persist_core::mirror::grpc_frame;

/// The path of a gRPC method.
pub fn path(service: &str, method: &str) -> String {
    format!("/{service}/{method}")
}

/// Runs `f` with the headers of a gRPC request to `path` on `cluster` (the `host` header
/// names the cluster, as Envoy's own gRPC client does).
fn with_headers<R>(path: &str, cluster: &str, f: impl FnOnce(&mut [ModuleHttpHeader]) -> R) -> R {
    let mut headers = [
        ModuleHttpHeader::of(":method", b"POST"),
        ModuleHttpHeader::of(":path", path.as_bytes()),
        ModuleHttpHeader::of("host", cluster.as_bytes()),
        ModuleHttpHeader::of("content-type", b"application/grpc"),
        ModuleHttpHeader::of("te", b"trailers"),
    ];
    f(&mut headers)
}

/// A token for the core: Envoy's callout and stream ids, which fit in 32 bits in practice.
fn token(id: Option<u64>) -> Result<u32, HostError> {
    id.and_then(|id| u32::try_from(id).ok()).ok_or(HostError)
}

thread_local! {
    /// Set while this thread starts a request's callout: Envoy may answer it from inside
    /// the call (a request it cannot send at all), before the request knows its token.
    static STARTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside [`call`] for a request: the request hook's answer to a
/// callout that fails at once. Envoy then reports the callout as not started, and the flow
/// goes on without the lookup.
pub fn starting_request_call() -> bool {
    STARTING.with(|s| s.get())
}

/// Sends a unary call; its token.
pub fn call(
    caller: Caller,
    cluster: &str,
    path: &str,
    message: &[u8],
    timeout_ms: u64,
) -> Result<u32, HostError> {
    let body = grpc_frame::frame(message);
    let request = matches!(caller, Caller::Filter(_));
    if request {
        STARTING.with(|s| s.set(true));
    }
    let id = with_headers(path, cluster, |headers| {
        ffi::http_callout(caller, cluster, headers, &body, timeout_ms.max(1))
    });
    if request {
        STARTING.with(|s| s.set(false));
    }
    token(id)
}

/// Opens a stream from the configuration and sends its first message; its token.
pub fn open_stream(
    config: ffi::ConfigEnvoyPtr,
    cluster: &str,
    path: &str,
    first: &[u8],
) -> Result<u32, HostError> {
    let body = grpc_frame::frame(first);
    token(with_headers(path, cluster, |headers| {
        ffi::config_start_stream(config, cluster, headers, &body)
    }))
}

/// Whether response headers are those of a gRPC answer under way: `:status` 200 and no
/// `grpc-status` other than 0 (a "trailers-only" error answer carries it in the headers).
///
/// # Safety
/// Every buffer of `headers` must be readable (or null) while this runs.
pub unsafe fn headers_ok(headers: &[EnvoyHttpHeader]) -> bool {
    let mut status_ok = false;
    for h in headers {
        // SAFETY: as the caller guarantees.
        let (key, value) = unsafe {
            (
                EnvoyBuffer::new(h.key_ptr, h.key_length).as_slice(),
                EnvoyBuffer::new(h.value_ptr, h.value_length).as_slice(),
            )
        };
        match key {
            b":status" => status_ok = value == b"200",
            b"grpc-status" if value != b"0" => return false,
            _ => {}
        }
    }
    status_ok
}

/// The message of a unary answer: a successful callout whose headers are a gRPC answer and
/// whose body is exactly one message. `None` for anything else (a failed or timed-out call,
/// a gRPC error: its body is empty).
///
/// # Safety
/// Every buffer of `headers` and `chunks` must be readable (or null) while this runs.
pub unsafe fn unary_answer(
    result: u32,
    headers: &[EnvoyHttpHeader],
    chunks: &[EnvoyBuffer],
) -> Option<Vec<u8>> {
    // SAFETY: as the caller guarantees.
    if result != ffi::CALLOUT_SUCCESS || !unsafe { headers_ok(headers) } {
        return None;
    }
    // SAFETY: as the caller guarantees.
    let body = unsafe { concat(chunks) };
    grpc_frame::unframe(&body).map(<[u8]>::to_vec)
}

/// The chunks of a body, as one buffer.
///
/// # Safety
/// Every buffer of `chunks` must be readable (or null) while this runs.
pub unsafe fn concat(chunks: &[EnvoyBuffer]) -> Vec<u8> {
    let mut body = Vec::new();
    for c in chunks {
        // SAFETY: as the caller guarantees.
        body.extend_from_slice(unsafe { c.as_slice() });
    }
    body
}

/// A slice over an array Envoy hands a hook (empty when null).
///
/// # Safety
/// `ptr` must point at `len` valid values, or be null, for as long as the slice is used.
pub unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: as the caller guarantees.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::raw::c_char;

    fn header(k: &'static str, v: &'static str) -> EnvoyHttpHeader {
        EnvoyHttpHeader {
            key_ptr: k.as_ptr().cast::<c_char>(),
            key_length: k.len(),
            value_ptr: v.as_ptr().cast::<c_char>(),
            value_length: v.len(),
        }
    }

    fn buf(b: &'static [u8]) -> EnvoyBuffer {
        EnvoyBuffer::new(b.as_ptr().cast::<c_char>(), b.len())
    }

    #[test]
    fn a_unary_answer_is_the_unframed_body_of_a_grpc_success() {
        let ok = [
            header(":status", "200"),
            header("content-type", "application/grpc"),
        ];
        let framed: &'static [u8] = b"\0\0\0\0\x03abc";
        let (a, b) = framed.split_at(4);
        unsafe {
            assert_eq!(
                unary_answer(ffi::CALLOUT_SUCCESS, &ok, &[buf(a), buf(b)]),
                Some(b"abc".to_vec())
            );
            assert_eq!(unary_answer(1, &ok, &[buf(framed)]), None, "reset");
            assert_eq!(
                unary_answer(ffi::CALLOUT_SUCCESS, &ok, &[]),
                None,
                "no message"
            );
            let trailers_only = [header(":status", "200"), header("grpc-status", "14")];
            assert_eq!(
                unary_answer(ffi::CALLOUT_SUCCESS, &trailers_only, &[]),
                None
            );
            let not_found = [header(":status", "404")];
            assert_eq!(
                unary_answer(ffi::CALLOUT_SUCCESS, &not_found, &[buf(framed)]),
                None
            );
            assert!(headers_ok(&[
                header(":status", "200"),
                header("grpc-status", "0")
            ]));
        }
    }

    #[test]
    fn paths_name_service_and_method() {
        assert_eq!(path("etcdserverpb.KV", "Range"), "/etcdserverpb.KV/Range");
    }
}
