//! Prices proxy-wasm host calls in Envoy, for `bench/hostcalls.py` (BENCHMARKS.md "What a
//! host call costs"): the no-op filter of `crates/noop-filter`, plus, on every request, the
//! host calls its plugin configuration names, e.g. `get_header=4` or `set_property=2`. The
//! difference in Envoy CPU per request to the no-op filter, divided by the count, is the
//! price of one call as Envoy 1.40 runs it.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::rc::Rc;

/// The calls made per request, by kind.
#[derive(Default, Clone, Copy)]
struct Plan {
    /// `proxy_get_header_map_value` of a request header the request has (`host`).
    get_header: u32,
    /// The same for a header it lacks.
    get_absent_header: u32,
    /// `proxy_replace_header_map_value` of a request header.
    set_header: u32,
    /// `proxy_remove_header_map_value` of a request header the request lacks.
    remove_absent_header: u32,
    /// `proxy_get_header_map_value` of a response header the response lacks.
    get_absent_response_header: u32,
    /// `proxy_get_property` of `upstream.address` (on the response).
    get_property: u32,
    /// `proxy_set_property` of a filter state key (on the response).
    set_property: u32,
    /// `proxy_get_current_time_nanoseconds`.
    time: u32,
    /// `proxy_get_shared_data` of a 370-byte value.
    shared_get: u32,
    /// No host call: FNV-1a over 64 bytes, this many times (how fast V8 runs the module's
    /// own code in Envoy).
    spin: u32,
}

impl Plan {
    fn parse(text: &str) -> Plan {
        let mut p = Plan::default();
        for item in text.split(',') {
            let Some((k, v)) = item.trim().split_once('=') else {
                continue;
            };
            let n = v.trim().parse().unwrap_or(0);
            match k.trim() {
                "get_header" => p.get_header = n,
                "get_absent_header" => p.get_absent_header = n,
                "set_header" => p.set_header = n,
                "remove_absent_header" => p.remove_absent_header = n,
                "get_absent_response_header" => p.get_absent_response_header = n,
                "get_property" => p.get_property = n,
                "set_property" => p.set_property = n,
                "time" => p.time = n,
                "shared_get" => p.shared_get = n,
                "spin" => p.spin = n,
                _ => {}
            }
        }
        p
    }
}

#[derive(Default)]
struct Root {
    plan: Rc<Plan>,
}

struct Http {
    plan: Rc<Plan>,
}

const SHARED_KEY: &str = "hostcall-cost.slot";

impl Context for Root {}
impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let text = self
            .get_plugin_configuration()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        self.plan = Rc::new(Plan::parse(&text));
        let _ = self.set_shared_data(SHARED_KEY, Some(&[7u8; 370]), None);
        true
    }
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            plan: Rc::clone(&self.plan),
        }))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Context for Http {}
impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let p = *self.plan;
        for _ in 0..p.get_header {
            let _ = self.get_http_request_header("host");
        }
        for _ in 0..p.get_absent_header {
            let _ = self.get_http_request_header("x-hostcall-cost-absent");
        }
        for _ in 0..p.set_header {
            self.set_http_request_header("x-hostcall-cost", Some("1"));
        }
        for _ in 0..p.remove_absent_header {
            self.set_http_request_header("x-hostcall-cost-absent", None);
        }
        for _ in 0..p.time {
            let _ = self.get_current_time();
        }
        for _ in 0..p.shared_get {
            let _ = self.get_shared_data(SHARED_KEY);
        }
        let mut h = 0x811c_9dc5u32;
        for i in 0..p.spin {
            let block = std::hint::black_box([i as u8; 64]);
            h = block
                .iter()
                .fold(h, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193));
        }
        std::hint::black_box(h);
        Action::Continue
    }
    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let p = *self.plan;
        for _ in 0..p.get_absent_response_header {
            let _ = self.get_http_response_header("x-hostcall-cost-absent");
        }
        for _ in 0..p.get_property {
            let _ = self.get_property(vec!["upstream", "address"]);
        }
        for i in 0..p.set_property {
            let key = if i % 2 == 0 { "cost.a" } else { "cost.b" };
            self.set_property(vec![key], Some(b"hit"));
        }
        Action::Continue
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::<Root>::default());
}}
