//! The per-request context: forwards the request and response headers, and the answer of a
//! mirror lookup, to [`persist_core::flow::Request`].

use crate::host::{self, WasmHost};
use persist_core::flow::{Profile, Request, RequestAction, Worker};
use persist_core::stats::Counter;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::rc::Rc;

/// What the root context of a VM ([`crate::state`]) shares with its HTTP contexts: the
/// compiled profile and the worker's state.
pub struct Shared {
    pub profile: Profile,
    pub worker: RefCell<Worker>,
}

/// Used when the plugin has no valid configuration: does nothing.
pub struct PassThrough;
impl Context for PassThrough {}
impl HttpContext for PassThrough {}

pub struct PersistHttp {
    shared: Rc<Shared>,
    request: Request,
}

impl PersistHttp {
    pub fn new(shared: Rc<Shared>) -> Self {
        PersistHttp {
            shared,
            request: Request::new(),
        }
    }
}

impl Context for PersistHttp {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if self.request.lookup() != Some(token_id) {
            return;
        }
        let body = (status_code == 0).then(|| host::grpc_body(response_size).unwrap_or_default());
        let Ok(mut worker) = self.shared.worker.try_borrow_mut() else {
            return;
        };
        self.request.on_lookup_answer(
            body.as_deref(),
            &self.shared.profile,
            &mut worker,
            &WasmHost,
        );
        if host::resume_request().is_err() {
            worker.count(Counter::Error);
        }
    }
}

impl HttpContext for PersistHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Ok(mut worker) = self.shared.worker.try_borrow_mut() else {
            return Action::Continue;
        };
        match self
            .request
            .on_request_headers(&self.shared.profile, &mut worker, &WasmHost)
        {
            RequestAction::Continue => Action::Continue,
            // Resumed in `on_grpc_call_response`, within `mirror.timeout`.
            RequestAction::WaitForLookup => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Ok(mut worker) = self.shared.worker.try_borrow_mut() {
            self.request
                .on_response_headers(&self.shared.profile, &mut worker, &WasmHost);
        }
        Action::Continue
    }
}
