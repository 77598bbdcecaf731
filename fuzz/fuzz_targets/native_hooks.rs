//! The native module's exported hooks (the functions Envoy calls) with a fake Envoy behind
//! the ABI callbacks: arbitrary request headers, cookies, attributes (client address,
//! upstream address, response code details, TLS digest) and response headers, through
//! configuration, request headers and response headers of every persistence type. The
//! header and attribute conversions (Envoy buffers to Rust and back) run on arbitrary bytes.
//! With `mirror`: the answer to a request's etcd lookup (its callout result, headers and
//! body chunks), the background's tick, a callout answer and watch-stream data of arbitrary
//! bytes on the configuration's hooks.
//! Never panics: libfuzzer's panic hook aborts even where the module's catch_unwind would
//! have saved Envoy, so any panic is found here.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::os::raw::c_void;
use std::sync::OnceLock;

// Links the module (its #[no_mangle] hooks).
use envoy_persist_native as _;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    ptr: *const u8,
    len: usize,
}

impl Buffer {
    fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the module passes buffers of `len` bytes valid for the call.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

extern "C" {
    fn envoy_dynamic_module_on_program_init() -> *const c_void;
    fn envoy_dynamic_module_on_http_filter_config_new(
        config: *mut c_void,
        name: Buffer,
        json: Buffer,
    ) -> *const c_void;
    fn envoy_dynamic_module_on_http_filter_new(
        config: *const c_void,
        filter: *mut c_void,
    ) -> *const c_void;
    fn envoy_dynamic_module_on_http_filter_request_headers(
        filter: *mut c_void,
        module: *const c_void,
        end: bool,
    ) -> u32;
    fn envoy_dynamic_module_on_http_filter_response_headers(
        filter: *mut c_void,
        module: *const c_void,
        end: bool,
    ) -> u32;
    fn envoy_dynamic_module_on_http_filter_destroy(module: *const c_void);
    fn envoy_dynamic_module_on_http_filter_http_callout_done(
        filter: *mut c_void,
        module: *const c_void,
        callout_id: u64,
        result: u32,
        headers: *const Header,
        headers_size: usize,
        chunks: *const Buffer,
        chunks_size: usize,
    );
    fn envoy_dynamic_module_on_http_filter_config_scheduled(
        config_envoy: *mut c_void,
        config: *const c_void,
        event_id: u64,
    );
    fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
        config_envoy: *mut c_void,
        config: *const c_void,
        callout_id: u64,
        result: u32,
        headers: *const Header,
        headers_size: usize,
        chunks: *const Buffer,
        chunks_size: usize,
    );
    fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
        config_envoy: *mut c_void,
        config: *const c_void,
        stream_id: u64,
        headers: *const Header,
        headers_size: usize,
        end_stream: bool,
    );
    fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
        config_envoy: *mut c_void,
        config: *const c_void,
        stream_id: u64,
        chunks: *const Buffer,
        chunks_size: usize,
        end_stream: bool,
    );
    fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
        config_envoy: *mut c_void,
        config: *const c_void,
        stream_id: u64,
        reason: u32,
    );
}

/// `envoy_dynamic_module_type_envoy_http_header` / `module_http_header`: the same layout.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    key: Buffer,
    value: Buffer,
}

fn buffer(b: &[u8]) -> Buffer {
    Buffer {
        ptr: b.as_ptr(),
        len: b.len(),
    }
}

/// One fake stream: its headers and attributes.
#[derive(Default)]
struct Stream {
    request: Vec<(Vec<u8>, Vec<u8>)>,
    response: Vec<(Vec<u8>, Vec<u8>)>,
    attributes: Vec<(u32, Vec<u8>)>,
    metrics: usize,
    route_cleared: bool,
    /// The request's etcd lookups (callout ids) and how often it was let go on.
    callouts: Vec<u64>,
    continued: usize,
}

/// The configuration's callouts and streams (any thread: the mirror's ticker commits from
/// its own).
static CONFIG_CALLS: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());
static CONFIG_STREAMS: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());
static NEXT_CALL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_call() -> u64 {
    NEXT_CALL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The request a callout sends: gRPC's headers, a framed message.
fn check_call(cluster: Buffer, headers: *const Header, n: usize, body: Buffer) {
    assert_eq!(cluster.bytes(), b"etcd");
    // SAFETY: the module passes `n` headers valid for the call.
    let headers = unsafe { std::slice::from_raw_parts(headers, n) };
    let path = headers
        .iter()
        .find(|h| h.key.bytes() == b":path")
        .expect(":path");
    assert!(path.value.bytes().starts_with(b"/etcdserverpb."));
    let body = body.bytes();
    assert!(body.len() >= 5 && body[0] == 0);
    assert_eq!(
        u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize,
        body.len() - 5
    );
}

thread_local! {
    static STREAM: RefCell<Stream> = RefCell::new(Stream::default());
}

fn headers(s: &mut Stream, kind: u32) -> &mut Vec<(Vec<u8>, Vec<u8>)> {
    if kind == 0 {
        &mut s.request
    } else {
        &mut s.response
    }
}

// --- the fake Envoy: every callback the module imports -------------------------------------

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_log(_level: u32, message: Buffer) {
    let _ = message.bytes();
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_log_enabled(_level: u32) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_get_header(
    _filter: *mut c_void,
    kind: u32,
    key: Buffer,
    result: *mut Buffer,
    index: usize,
    size: *mut usize,
) -> bool {
    STREAM.with(|s| {
        let mut s = s.borrow_mut();
        let key = key.bytes().to_ascii_lowercase();
        let values: Vec<&Vec<u8>> = headers(&mut s, kind)
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(&key))
            .map(|(_, v)| v)
            .collect();
        // SAFETY: out-pointers from the module are valid locals.
        unsafe {
            if !size.is_null() {
                *size = values.len();
            }
            match values.get(index) {
                Some(v) => {
                    *result = Buffer {
                        ptr: v.as_ptr(),
                        len: v.len(),
                    };
                    true
                }
                None => false,
            }
        }
    })
}

/// `envoy_dynamic_module_type_http_header`: one header of a whole-map read.
#[repr(C)]
pub struct HttpHeader {
    key_ptr: *const u8,
    key_length: usize,
    value_ptr: *const u8,
    value_length: usize,
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_get_headers_size(
    _filter: *mut c_void,
    kind: u32,
) -> usize {
    STREAM.with(|s| headers(&mut s.borrow_mut(), kind).len())
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_get_headers(
    _filter: *mut c_void,
    kind: u32,
    result: *mut HttpHeader,
) -> bool {
    STREAM.with(|s| {
        let mut s = s.borrow_mut();
        // The pointers stay valid until the module changes this map (it reads the map
        // again after any change of its own), as Envoy's do.
        for (i, (k, v)) in headers(&mut s, kind).iter().enumerate() {
            // SAFETY: the module passes an array of get_headers_size() entries.
            unsafe {
                *result.add(i) = HttpHeader {
                    key_ptr: k.as_ptr(),
                    key_length: k.len(),
                    value_ptr: v.as_ptr(),
                    value_length: v.len(),
                };
            }
        }
        true
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_set_header(
    _filter: *mut c_void,
    kind: u32,
    key: Buffer,
    value: Buffer,
) -> bool {
    STREAM.with(|s| {
        let mut s = s.borrow_mut();
        let k = key.bytes().to_ascii_lowercase();
        let h = headers(&mut s, kind);
        h.retain(|(n, _)| *n != k);
        if !value.ptr.is_null() {
            h.push((k, value.bytes().to_vec()));
        }
        true
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_add_header(
    _filter: *mut c_void,
    kind: u32,
    key: Buffer,
    value: Buffer,
) -> bool {
    STREAM.with(|s| {
        let mut s = s.borrow_mut();
        let k = key.bytes().to_ascii_lowercase();
        headers(&mut s, kind).push((k, value.bytes().to_vec()));
        true
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
    _filter: *mut c_void,
    id: u32,
    result: *mut Buffer,
) -> bool {
    STREAM.with(|s| {
        let s = s.borrow();
        match s.attributes.iter().find(|(i, _)| *i == id) {
            Some((_, v)) => {
                // SAFETY: the out-pointer is a valid local; the bytes live in STREAM,
                // unchanged until the module copied them.
                unsafe {
                    *result = Buffer {
                        ptr: v.as_ptr(),
                        len: v.len(),
                    }
                };
                true
            }
            None => false,
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_get_metadata_string(
    _filter: *mut c_void,
    _source: u32,
    _ns: Buffer,
    key: Buffer,
    result: *mut Buffer,
) -> bool {
    // The metadata value is the key itself (arbitrary bytes when the config names them).
    let k = key.bytes();
    // SAFETY: the out-pointer is a valid local; `key` outlives the module's copy.
    unsafe {
        *result = Buffer {
            ptr: k.as_ptr(),
            len: k.len(),
        }
    };
    !k.is_empty()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_get_metadata_number(
    _filter: *mut c_void,
    _source: u32,
    _ns: Buffer,
    _key: Buffer,
    _result: *mut f64,
) -> bool {
    false
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_set_upstream_override_host(
    _filter: *mut c_void,
    host: Buffer,
    _strict: bool,
) -> bool {
    // Envoy parses the address it is given: it must be one.
    let h = std::str::from_utf8(host.bytes()).expect("override host is UTF-8");
    assert!(
        h.parse::<std::net::SocketAddr>().is_ok(),
        "override host {h:?}"
    );
    true
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_clear_route_cache(_filter: *mut c_void) {
    STREAM.with(|s| s.borrow_mut().route_cleared = true);
}

/// The fake's cluster name is the attribute [`CLUSTER_NAME`] of the input.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_get_cluster_name(
    filter: *mut c_void,
    result: *mut Buffer,
) -> bool {
    envoy_dynamic_module_callback_http_filter_get_attribute_string(filter, CLUSTER_NAME, result)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
    _filter: *mut c_void,
    key: Buffer,
    value: Buffer,
) -> bool {
    // The module sets the access-log state: `wasm.persist.*`, a decision or type name.
    let k = std::str::from_utf8(key.bytes()).expect("filter state key is UTF-8");
    assert!(k.starts_with("wasm.persist."), "filter state key {k:?}");
    assert!(!value.bytes().is_empty());
    true
}

static NEXT_METRIC: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn define(name: Buffer, id: *mut usize) -> u32 {
    assert!(!name.bytes().is_empty());
    // SAFETY: the out-pointer is a valid local.
    unsafe { *id = NEXT_METRIC.fetch_add(1, std::sync::atomic::Ordering::Relaxed) };
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
    _config: *mut c_void,
    name: Buffer,
    _labels: *mut Buffer,
    _n: usize,
    id: *mut usize,
) -> u32 {
    define(name, id)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
    _config: *mut c_void,
    name: Buffer,
    _labels: *mut Buffer,
    _n: usize,
    id: *mut usize,
) -> u32 {
    define(name, id)
}

fn update(id: usize) -> u32 {
    STREAM.with(|s| s.borrow_mut().metrics += 1);
    u32::from(id >= NEXT_METRIC.load(std::sync::atomic::Ordering::Relaxed))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_increment_counter(
    _f: *mut c_void,
    id: usize,
    _l: *mut Buffer,
    _n: usize,
    _v: u64,
) -> u32 {
    update(id)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_increment_gauge(
    _f: *mut c_void,
    id: usize,
    _l: *mut Buffer,
    _n: usize,
    _v: u64,
) -> u32 {
    update(id)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_decrement_gauge(
    _f: *mut c_void,
    id: usize,
    _l: *mut Buffer,
    _n: usize,
    _v: u64,
) -> u32 {
    update(id)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_set_gauge(
    _f: *mut c_void,
    id: usize,
    _l: *mut Buffer,
    _n: usize,
    _v: u64,
) -> u32 {
    update(id)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
    _c: *mut c_void,
    id: usize,
    _l: *mut Buffer,
    _n: usize,
    _v: u64,
) -> u32 {
    u32::from(id >= NEXT_METRIC.load(std::sync::atomic::Ordering::Relaxed))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_increment_gauge(
    c: *mut c_void,
    id: usize,
    l: *mut Buffer,
    n: usize,
    v: u64,
) -> u32 {
    envoy_dynamic_module_callback_http_filter_config_increment_counter(c, id, l, n, v)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
    c: *mut c_void,
    id: usize,
    l: *mut Buffer,
    n: usize,
    v: u64,
) -> u32 {
    envoy_dynamic_module_callback_http_filter_config_increment_counter(c, id, l, n, v)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
    c: *mut c_void,
    id: usize,
    l: *mut Buffer,
    n: usize,
    v: u64,
) -> u32 {
    envoy_dynamic_module_callback_http_filter_config_increment_counter(c, id, l, n, v)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_http_callout(
    _filter: *mut c_void,
    id_out: *mut u64,
    cluster: Buffer,
    headers: *const Header,
    n: usize,
    body: Buffer,
    timeout_ms: u64,
) -> u32 {
    check_call(cluster, headers, n, body);
    assert!(timeout_ms > 0);
    let id = next_call();
    STREAM.with(|s| s.borrow_mut().callouts.push(id));
    // SAFETY: the out-pointer is a valid local of the module.
    unsafe { *id_out = id };
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_continue_decoding(
    _filter: *mut c_void,
) {
    STREAM.with(|s| s.borrow_mut().continued += 1);
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_http_callout(
    _config: *mut c_void,
    id_out: *mut u64,
    cluster: Buffer,
    headers: *const Header,
    n: usize,
    body: Buffer,
    _timeout_ms: u64,
) -> u32 {
    check_call(cluster, headers, n, body);
    let id = next_call();
    CONFIG_CALLS.lock().unwrap().push(id);
    // SAFETY: the out-pointer is a valid local of the module.
    unsafe { *id_out = id };
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_start_http_stream(
    _config: *mut c_void,
    id_out: *mut u64,
    cluster: Buffer,
    headers: *const Header,
    n: usize,
    body: Buffer,
    end_stream: bool,
    _timeout_ms: u64,
) -> u32 {
    check_call(cluster, headers, n, body);
    assert!(!end_stream, "the watch stays open");
    let id = next_call();
    CONFIG_STREAMS.lock().unwrap().push(id);
    // SAFETY: the out-pointer is a valid local of the module.
    unsafe { *id_out = id };
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_reset_http_stream(
    _config: *mut c_void,
    id: u64,
) {
    CONFIG_STREAMS.lock().unwrap().retain(|s| *s != id);
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
    _config: *mut c_void,
) -> *mut c_void {
    std::ptr::NonNull::<u8>::dangling().as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
    _scheduler: *mut c_void,
    _event_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
    _scheduler: *mut c_void,
) {
}

// --- the driver --------------------------------------------------------------------------------

const KEY: &str = "ZW52b3ktcGVyc2lzdCBkZW1vIGtleTogQ0hBTkdFISE=";

fn configs() -> Vec<String> {
    vec![
        format!(r#"{{"name":"s","type":"http_cookie","strict":true,"cookie":{{"keys":["{KEY}"]}}}}"#),
        r#"{"name":"e","type":"http_cookie","cookie":{"format":"envoy","name":"SESSION"}}"#.into(),
        r#"{"name":"n","type":"http_cookie","cookie":{"format":"nginx"}}"#.into(),
        r#"{"name":"b","type":"http_cookie","cookie":{"format":"bigip","always_send":true}}"#.into(),
        r#"{"name":"h","type":"http_header","max_entries":8,"header":{"name":"x-user","servers":{"v":"10.0.0.9:80"}}}"#.into(),
        r#"{"name":"i","type":"client_ip","max_entries":8,"client_ip":{"ipv4_prefix":24}}"#.into(),
        r#"{"name":"a","type":"app_cookie","app_cookie":{"name":"SID","query_parameter":"sid","learn_from_request":true}}"#.into(),
        r#"{"name":"t","type":"tls","tls":{"key":"peer_certificate"}}"#.into(),
        r#"{"name":"c","type":"custom","custom":{"source":{"property":["metadata","filter_metadata","ns","k"]}}}"#.into(),
        r#"{"name":"k","type":"consistent_hash","hash":{"source":{"header":"x-user"}}}"#.into(),
        format!(r#"{{"name":"w","type":"http_cookie","cookie":{{"keys":["{KEY}"]}},"clusters":{{"allow":["blue","green"]}}}}"#),
        format!(r#"{{"name":"m","type":"http_header","max_entries":8,"header":{{"name":"x-user"}},"mirror":{{"cluster":"etcd","secret":"{KEY}"}}}}"#),
    ]
}

struct Configs(Vec<usize>);

/// Each configuration created once (as Envoy does at start), kept for the process.
fn created() -> &'static Configs {
    static C: OnceLock<Configs> = OnceLock::new();
    C.get_or_init(|| {
        // SAFETY: the module's init hook takes no argument.
        unsafe { envoy_dynamic_module_on_program_init() };
        Configs(
            configs()
                .iter()
                .map(|json| {
                    let name = b"persist";
                    // SAFETY: buffers point into live slices; a dangling non-null config
                    // pointer is what Envoy passes (the fake never dereferences it).
                    let c = unsafe {
                        envoy_dynamic_module_on_http_filter_config_new(
                            std::ptr::NonNull::<u8>::dangling().as_ptr().cast(),
                            Buffer {
                                ptr: name.as_ptr(),
                                len: name.len(),
                            },
                            Buffer {
                                ptr: json.as_ptr(),
                                len: json.len(),
                            },
                        )
                    };
                    assert!(!c.is_null(), "config refused: {json}");
                    c as usize
                })
                .collect(),
        )
    })
}

/// Splits the input into fields at 0xff bytes.
fn fields(data: &[u8]) -> Vec<&[u8]> {
    data.split(|b| *b == 0xff).collect()
}

const REQUEST_NAMES: [&[u8]; 7] = [
    b"cookie",
    b"x-user",
    b"x-persist-upstream",
    b":path",
    b"x-forwarded-for",
    b"cookie",
    b"x-persist-cluster",
];
/// Not an attribute id of the ABI: where the input keeps the cluster name.
const CLUSTER_NAME: u32 = u32::MAX;
const ATTRIBUTES: [u32; 6] = [24, 41, 16, 38, 0, CLUSTER_NAME];
/// The index in `configs()` of the one with `clusters`.
const WITH_CLUSTERS: usize = 10;
/// The index in `configs()` of the one with `mirror`.
const WITH_MIRROR: usize = 11;
const RESPONSE_NAMES: [&[u8]; 3] = [b"set-cookie", b"x-persist-upstream", b"set-cookie"];

fuzz_target!(|data: &[u8]| {
    let configs = created();
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let index = usize::from(pick) % configs.0.len();
    let config = configs.0[index] as *const c_void;
    let f = fields(rest);
    let mut stream = Stream::default();
    let mut it = f.iter();
    for name in REQUEST_NAMES {
        if let Some(v) = it.next() {
            stream.request.push((name.to_vec(), v.to_vec()));
        }
    }
    for id in ATTRIBUTES {
        if let Some(v) = it.next() {
            stream.attributes.push((id, v.to_vec()));
        }
    }
    let response: Vec<(Vec<u8>, Vec<u8>)> = RESPONSE_NAMES
        .iter()
        .zip(&mut it)
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    // The mirror's inputs: the lookup's callout result, its `:status`, `grpc-status` and body;
    // a background answer and a chunk of the watch stream.
    let mirror: Vec<&[u8]> = it.by_ref().take(6).copied().collect();
    let field = |i: usize| mirror.get(i).copied().unwrap_or_default();
    STREAM.with(|s| *s.borrow_mut() = stream);
    let envoy_filter: *mut c_void = std::ptr::NonNull::<u8>::dangling().as_ptr().cast();
    // SAFETY: the hooks in Envoy's order for one stream; the module's filter pointer is used
    // until its destroy hook only.
    unsafe {
        let filter = envoy_dynamic_module_on_http_filter_new(config, envoy_filter);
        assert!(!filter.is_null());
        let status =
            envoy_dynamic_module_on_http_filter_request_headers(envoy_filter, filter, true);
        let lookup = STREAM.with(|s| s.borrow().callouts.last().copied());
        if index == WITH_MIRROR && lookup.is_some() {
            // A key the table misses: the request waits for etcd's answer.
            assert_eq!(status, 1, "StopIteration");
        } else {
            assert_eq!(status, 0);
        }
        if let Some(id) = lookup {
            let result = u32::from(field(0).first().copied().unwrap_or(0) % 3);
            let headers = [
                Header {
                    key: buffer(b":status"),
                    value: buffer(field(1)),
                },
                Header {
                    key: buffer(b"grpc-status"),
                    value: buffer(field(2)),
                },
            ];
            let body = field(3);
            let (a, b) = body.split_at(body.len() / 2);
            let chunks = [buffer(a), buffer(b)];
            // An id that is not the lookup's is ignored; the lookup's lets the request go on.
            envoy_dynamic_module_on_http_filter_http_callout_done(
                envoy_filter,
                filter,
                id + 1000,
                result,
                headers.as_ptr(),
                2,
                chunks.as_ptr(),
                2,
            );
            assert_eq!(STREAM.with(|s| s.borrow().continued), 0);
            envoy_dynamic_module_on_http_filter_http_callout_done(
                envoy_filter,
                filter,
                id,
                result,
                headers.as_ptr(),
                2,
                chunks.as_ptr(),
                2,
            );
            assert_eq!(STREAM.with(|s| s.borrow().continued), 1, "let go on once");
        }
        STREAM.with(|s| s.borrow_mut().response = response);
        assert_eq!(
            envoy_dynamic_module_on_http_filter_response_headers(envoy_filter, filter, true),
            0
        );
        envoy_dynamic_module_on_http_filter_destroy(filter);
        if index == WITH_MIRROR {
            background(config, &field);
        }
    }
    // No client copy of the hand-off header survives the request hook.
    STREAM.with(|s| {
        let s = s.borrow();
        assert!(s.request.iter().all(|(n, _)| n != b"x-persist-upstream"));
        // With `clusters`, no client copy of the cluster header survives either: the
        // module wrote an allowed name or removed it, then had the route chosen again.
        if index == WITH_CLUSTERS {
            assert!(s.route_cleared);
            assert!(s
                .request
                .iter()
                .filter(|(n, _)| n == b"x-persist-cluster")
                .all(|(_, v)| v == b"blue" || v == b"green"));
        }
    });
});

/// The mirror's background hooks on the configuration: a tick (it may start a load or a
/// write), the answer to the latest callout and data on the latest stream, of arbitrary bytes.
///
/// # Safety
/// `config` is a live configuration of the module.
unsafe fn background<'a>(config: *const c_void, field: &dyn Fn(usize) -> &'a [u8]) {
    let envoy_config: *mut c_void = std::ptr::NonNull::<u8>::dangling().as_ptr().cast();
    let ok = [Header {
        key: buffer(b":status"),
        value: buffer(b"200"),
    }];
    // SAFETY: the hooks as Envoy calls them on its main thread; arrays live for each call.
    unsafe {
        envoy_dynamic_module_on_http_filter_config_scheduled(envoy_config, config, 0);
        let call = CONFIG_CALLS.lock().unwrap().last().copied();
        if let Some(id) = call {
            let chunks = [buffer(field(4))];
            envoy_dynamic_module_on_http_filter_config_http_callout_done(
                envoy_config,
                config,
                id,
                0,
                ok.as_ptr(),
                1,
                chunks.as_ptr(),
                1,
            );
        }
        let stream = CONFIG_STREAMS.lock().unwrap().last().copied();
        if let Some(id) = stream {
            envoy_dynamic_module_on_http_filter_config_http_stream_headers(
                envoy_config,
                config,
                id,
                ok.as_ptr(),
                1,
                false,
            );
            let data = field(5);
            let (a, b) = data.split_at(data.len() / 3);
            let chunks = [buffer(a), buffer(b)];
            envoy_dynamic_module_on_http_filter_config_http_stream_data(
                envoy_config,
                config,
                id,
                chunks.as_ptr(),
                2,
                false,
            );
            if data.first() == Some(&0x7f) {
                envoy_dynamic_module_on_http_filter_config_http_stream_reset(
                    envoy_config,
                    config,
                    id,
                    0,
                );
            }
        }
    }
}
