//! Every decision of the flow, against the recording host: what a request names, what a
//! response issues or learns, which host calls each path makes.

use super::*;
use crate::host::recording::{Call, RecordingHost};
use crate::mirror::driver::Driver;
use crate::mirror::proto::{
    Event, KeyValue, RangeResponse, ResponseHeader, WatchResponse, EVENT_PUT,
};
use crate::mirror::record::encode_value;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use prost::Message;
use std::net::SocketAddr;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const NOW_MS: u64 = 1_800_000_000_000;
const A: &str = "10.0.0.1:8080";
const B: &str = "10.0.0.2:8080";
const KEY: &str = r#""cookie":{"keys":["j8+PHxERERHDw8PDWlpaWlpaWlpaWlpaWlpaWlpaWlo="]}"#;

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn b64(s: &str) -> Vec<u8> {
    STANDARD.encode(s).into_bytes()
}

/// One Envoy: a host, a compiled profile and one worker (more with [`Sim::worker`]).
struct Sim {
    host: RecordingHost,
    profile: Profile,
    worker: Worker,
}

/// How Envoy answered a request.
#[derive(Clone, Copy)]
struct Answer<'a> {
    /// `upstream.address`, absent for a local reply before any upstream was chosen.
    upstream: Option<&'a str>,
    /// The stateful_session filter's response header: the host it used instead.
    session_header: Option<&'a str>,
    /// `response.code_details`.
    details: &'a str,
}

/// One of Envoy's own replies (`details`: its `%RESPONSE_CODE_DETAILS%`), after trying
/// `upstream` or none.
fn local_reply<'a>(upstream: Option<&'a str>, details: &'a str) -> Answer<'a> {
    Answer {
        upstream,
        session_header: None,
        details,
    }
}

/// Envoy used another host than the named one, and its stateful_session filter said so.
fn moved_to(upstream: &str) -> Answer<'_> {
    Answer {
        upstream: Some(upstream),
        session_header: Some(upstream),
        details: "via_upstream",
    }
}

fn from(upstream: &str) -> Answer<'_> {
    Answer {
        upstream: Some(upstream),
        session_header: None,
        details: "via_upstream",
    }
}

impl Sim {
    fn new(json: &str) -> Sim {
        Sim::on(RecordingHost::new(NOW_MS), json)
    }

    fn on(host: RecordingHost, json: &str) -> Sim {
        let profile = Profile::compile(json.as_bytes(), &host).unwrap();
        let worker = Worker::new(&profile, &host).unwrap();
        Sim {
            host,
            profile,
            worker,
        }
    }

    fn worker(&self) -> Worker {
        Worker::new(&self.profile, &self.host).unwrap()
    }

    /// The request half with these headers; the host's call log then holds its calls.
    fn request(&mut self, headers: &[(&str, &[u8])]) -> Request {
        let fresh = self.worker();
        let mut w = std::mem::replace(&mut self.worker, fresh);
        let r = self.request_on(&mut w, headers);
        self.worker = w;
        r
    }

    fn request_on(&self, worker: &mut Worker, headers: &[(&str, &[u8])]) -> Request {
        self.host.next_request();
        for (n, v) in headers {
            self.host.with_request_header(n, v);
        }
        let mut r = Request::new();
        assert_eq!(
            r.on_request_headers(&self.profile, worker, &self.host),
            RequestAction::Continue
        );
        r
    }

    /// The response half, after Envoy answered as `answer` says.
    fn respond(&mut self, r: &mut Request, answer: Answer<'_>) {
        let fresh = self.worker();
        let mut w = std::mem::replace(&mut self.worker, fresh);
        self.respond_on(&mut w, r, answer);
        self.worker = w;
    }

    fn respond_on(&self, worker: &mut Worker, r: &mut Request, answer: Answer<'_>) {
        self.host.calls.borrow_mut().clear();
        self.host.reads.set(0);
        if let Some(u) = answer.upstream {
            self.host
                .with_property(&["upstream", "address"], u.as_bytes());
        }
        if let Some(h) = answer.session_header {
            self.host
                .with_response_header("x-persist-upstream", &b64(h));
        }
        self.host
            .with_property(&["response", "code_details"], answer.details.as_bytes());
        r.on_response_headers(&self.profile, worker, &self.host);
    }

    fn set_cookie(&self) -> Option<String> {
        self.host
            .response_values("set-cookie")
            .first()
            .map(|v| String::from_utf8(v.clone()).unwrap())
    }

    /// `name=value` of the response's cookie, for the next request.
    fn cookie(&self) -> Vec<u8> {
        let sc = self.set_cookie().expect("a cookie was issued");
        sc.split(';').next().unwrap().as_bytes().to_vec()
    }

    fn handed_off(&self) -> Option<Vec<u8>> {
        self.host.request_value("x-persist-upstream")
    }

    /// Flushes the worker's counts and returns counter `name` of profile `p`.
    fn stat(&mut self, name: &str) -> i64 {
        self.worker.tick(&self.profile, &self.host);
        self.host.metric(&format!("persist.p.{name}"))
    }
}

#[test]
fn cookie_new_client_then_steady_requests_write_nothing() {
    let mut s = Sim::new(&format!(r#"{{"name":"p","type":"http_cookie",{KEY}}}"#));
    let mut r = s.request(&[]);
    assert_eq!(s.host.writes(), vec![], "no client copy: nothing removed");
    assert_eq!(s.handed_off(), None);
    s.respond(&mut r, from(A));
    assert!(s.set_cookie().unwrap().starts_with("persist="));
    let cookie = s.cookie();

    // The cookie names A: handed off as base64, a hit.
    let mut r = s.request(&[("cookie", &cookie)]);
    assert_eq!(s.handed_off(), Some(b64(A)));
    assert_eq!(
        s.host.writes(),
        vec![Call::SetRequestHeader("x-persist-upstream".into(), b64(A))]
    );
    // Envoy used A (no stateful_session response header): nothing is written, and only
    // that header is read.
    s.respond(&mut r, from(A));
    assert_eq!(s.host.writes(), vec![]);
    assert_eq!(s.host.reads.get(), 1);
    assert_eq!(s.host.state(DECISION_STATE).as_deref(), Some("hit"));
    assert_eq!(s.host.state(TYPE_STATE).as_deref(), Some("http_cookie"));
    assert_eq!(s.stat("hit"), 1);
    assert_eq!(s.stat("new"), 1);
    assert_eq!(s.stat("miss"), 1);
}

#[test]
fn the_access_log_decision_is_the_weightiest_outcome() {
    let mut s = Sim::new(&format!(r#"{{"name":"p","type":"http_cookie",{KEY}}}"#));
    let mut r = s.request(&[("cookie", b"persist=forged")]);
    s.respond(&mut r, from(A));
    assert_eq!(s.host.state(DECISION_STATE).as_deref(), Some("invalid"));
    let cookie = s.cookie();
    let mut r = s.request(&[]);
    s.respond(&mut r, from(A));
    assert_eq!(s.host.state(DECISION_STATE).as_deref(), Some("new"));
    let mut r = s.request(&[("cookie", &cookie)]);
    s.respond(&mut r, moved_to(B));
    assert_eq!(s.host.state(DECISION_STATE).as_deref(), Some("rebind"));
    let mut s = Sim::new(TABLE);
    let mut r = s.request(&[("x-user", b"zed")]);
    s.respond(&mut r, from(A));
    assert_eq!(s.host.state(DECISION_STATE).as_deref(), Some("new"));
    assert_eq!(s.host.state(TYPE_STATE).as_deref(), Some("http_header"));
}

#[test]
fn a_client_hand_off_header_is_removed_and_chooses_nothing() {
    let mut s = Sim::new(&format!(r#"{{"name":"p","type":"http_cookie",{KEY}}}"#));
    s.request(&[("x-persist-upstream", &b64(B))]);
    assert_eq!(
        s.host.writes(),
        vec![Call::RemoveRequestHeader("x-persist-upstream".into())]
    );
    assert_eq!(s.handed_off(), None);
}

#[test]
fn cookie_rebinds_when_envoy_used_another_host() {
    let mut s = Sim::new(&format!(r#"{{"name":"p","type":"http_cookie",{KEY}}}"#));
    let mut r = s.request(&[]);
    s.respond(&mut r, from(A));
    let cookie = s.cookie();
    s.host.advance_ms(1000);
    let mut r = s.request(&[("cookie", &cookie)]);
    s.respond(&mut r, moved_to(B));
    assert!(
        s.host
            .writes()
            .contains(&Call::RemoveResponseHeader("x-persist-upstream".into())),
        "Envoy's header must not reach the client"
    );
    let moved = s.cookie();
    assert_eq!(s.stat("rebind"), 1);
    let _ = s.request(&[("cookie", &moved)]);
    assert_eq!(s.handed_off(), Some(b64(B)));
}

#[test]
fn nothing_is_issued_from_a_local_reply() {
    let mut s = Sim::new(
        r#"{"name":"p","type":"http_cookie","cookie":{"always_send":true,"keys":["j8+PHxERERHDw8PDWlpaWlpaWlpaWlpaWlpaWlpaWlo="]}}"#,
    );
    // No healthy upstream at all: Envoy's 503 names no upstream.
    let mut r = s.request(&[]);
    s.respond(&mut r, local_reply(None, "no_healthy_upstream"));
    assert_eq!(s.set_cookie(), None);
    // A server was tried and did not answer (connect failure, timeout before headers).
    let mut r = s.request(&[]);
    s.respond(
        &mut r,
        local_reply(
            Some(A),
            "upstream_reset_before_response_started{connection_failure}",
        ),
    );
    assert_eq!(s.set_cookie(), None);
    assert_eq!(s.stat("new"), 0);
    // A persisted client whose server is down under strict: 503, the cookie stays as it
    // is (always_send does not re-issue it).
    let mut r = s.request(&[]);
    s.respond(&mut r, from(A));
    let cookie = s.cookie();
    let mut r = s.request(&[("cookie", &cookie)]);
    s.respond(&mut r, local_reply(None, "stateful_session_host_not_found"));
    assert_eq!(s.set_cookie(), None);
    // The same request answered by the server: always_send re-sends.
    let mut r = s.request(&[("cookie", &cookie)]);
    s.respond(&mut r, from(A));
    assert!(s.set_cookie().is_some());
}

#[test]
fn override_host_marks_a_server_that_did_not_answer_suspect_for_every_worker() {
    let mut s = Sim::new(&format!(
        r#"{{"name":"p","type":"http_cookie","handoff":"override_host","suspect_for":"10s",{KEY}}}"#
    ));
    let mut r = s.request(&[]);
    s.respond(&mut r, from(A));
    let cookie = s.cookie();
    let mut r = s.request(&[("cookie", &cookie)]);
    assert_eq!(s.handed_off(), Some(A.as_bytes().to_vec()), "plain ip:port");
    // A refused; the route's retry went to B.
    s.respond(&mut r, from(B));
    let rebound = s.cookie();
    assert!(s
        .host
        .writes()
        .contains(&Call::StoreSet("persist.p.suspect".into())));
    // Another worker learns it on its tick and no longer names A.
    let mut other = s.worker();
    other.tick(&s.profile, &s.host);
    let _ = s.request_on(&mut other, &[("cookie", &cookie)]);
    assert_eq!(s.handed_off(), None, "A is suspect");
    // ...but names B for the rebound client.
    let _ = s.request_on(&mut other, &[("cookie", &rebound)]);
    assert_eq!(s.handed_off(), Some(B.as_bytes().to_vec()));
    // After suspect_for, A is named again.
    s.host.advance_ms(10_001);
    other.tick(&s.profile, &s.host);
    let _ = s.request_on(&mut other, &[("cookie", &cookie)]);
    assert_eq!(s.handed_off(), Some(A.as_bytes().to_vec()));
}

#[test]
fn stateful_session_never_marks_suspects() {
    let mut s = Sim::new(&format!(r#"{{"name":"p","type":"http_cookie",{KEY}}}"#));
    let mut r = s.request(&[]);
    s.respond(&mut r, from(A));
    let cookie = s.cookie();
    let mut r = s.request(&[("cookie", &cookie)]);
    s.respond(&mut r, moved_to(B));
    assert!(!s
        .host
        .writes()
        .contains(&Call::StoreSet("persist.p.suspect".into())));
}

#[test]
fn a_hand_off_envoy_ignores_is_counted_and_the_real_server_learned() {
    let mut s = Sim::new(&format!(r#"{{"name":"p","type":"http_cookie",{KEY}}}"#));
    let mut r = s.request(&[]);
    s.respond(&mut r, from(A));
    let cookie = s.cookie();
    // The stateful_session filter is missing: Envoy load balances to B, silently.
    let mut rebound = None;
    for i in 1..=handoff::CHECK_EVERY {
        let mut r = s.request(&[("cookie", &cookie)]);
        s.respond(&mut r, from(B));
        if i < handoff::CHECK_EVERY {
            assert_eq!(s.set_cookie(), None, "not checked yet");
        } else {
            rebound = s.set_cookie();
        }
    }
    assert!(rebound.is_some(), "the checked response rebinds to B");
    assert_eq!(s.stat("handoff_ignored"), 1);
    assert_eq!(s.stat("rebind"), 1);
}

#[test]
fn native_override_names_the_host_directly() {
    let mut host = RecordingHost::new(NOW_MS);
    host.native_override = true;
    let mut s = Sim::on(
        host,
        &format!(r#"{{"name":"p","type":"http_cookie",{KEY}}}"#),
    );
    let mut r = s.request(&[]);
    s.respond(&mut r, from(A));
    let cookie = s.cookie();
    let mut r = s.request(&[("cookie", &cookie), ("x-persist-upstream", &b64(B))]);
    assert_eq!(
        s.host.writes(),
        vec![
            Call::OverrideUpstream(a(A), false),
            Call::RemoveRequestHeader("x-persist-upstream".into())
        ]
    );
    // Envoy failed over to B: learned from upstream.address (no response header natively).
    s.respond(&mut r, from(B));
    assert!(s.set_cookie().is_some());
    assert_eq!(s.stat("rebind"), 1);
}

#[test]
fn native_host_learns_a_new_client_from_upstream_address_only() {
    let mut host = RecordingHost::new(NOW_MS);
    host.native_override = true;
    let mut s = Sim::on(
        host,
        &format!(r#"{{"name":"p","type":"http_cookie",{KEY}}}"#),
    );
    // No server named: nothing hands one over in a header natively, so a response header
    // of that name (here a backend's, naming B) is neither read nor removed; the server that
    // answered is the upstream address.
    let mut r = s.request(&[]);
    let answer = Answer {
        upstream: Some(A),
        session_header: Some(B),
        details: "via_upstream",
    };
    s.respond(&mut r, answer);
    assert!(!s
        .host
        .calls
        .borrow()
        .iter()
        .any(|c| matches!(c, Call::RemoveResponseHeader(_))));
    let cookie = s.cookie();
    let _ = s.request(&[("cookie", &cookie)]);
    assert_eq!(s.host.writes(), vec![Call::OverrideUpstream(a(A), false)]);
}

#[test]
fn strict_is_passed_to_the_native_override_and_refused_without_one() {
    let json = format!(r#"{{"name":"p","type":"http_cookie","strict":true,{KEY}}}"#);
    // A host that hands the server over in a header cannot honour it: one line naming it,
    // before any stat is defined.
    let plain = RecordingHost::new(NOW_MS);
    let e = Profile::compile(json.as_bytes(), &plain).unwrap_err();
    assert!(e.starts_with("invalid configuration: strict: "), "{e}");
    assert!(plain.metrics.borrow().is_empty());
    let mut host = RecordingHost::new(NOW_MS);
    host.native_override = true;
    let mut s = Sim::on(host, &json);
    assert!(s.profile.config.strict);
    let mut r = s.request(&[]);
    s.respond(&mut r, from(A));
    let cookie = s.cookie();
    let _ = s.request(&[("cookie", &cookie)]);
    assert_eq!(s.host.writes(), vec![Call::OverrideUpstream(a(A), true)]);
    // Without the field the override is not strict (the failover test above).
    let mut host = RecordingHost::new(NOW_MS);
    host.native_override = true;
    let json = format!(r#"{{"name":"p","type":"http_cookie","strict":false,{KEY}}}"#);
    let mut s = Sim::on(host, &json);
    let _ = s.request(&[("cookie", &cookie)]);
    assert_eq!(s.host.writes(), vec![Call::OverrideUpstream(a(A), false)]);
}

#[test]
fn nginx_hashes_are_learned_from_answers_and_resolved_by_other_workers() {
    let mut s = Sim::new(r#"{"name":"p","type":"http_cookie","cookie":{"format":"nginx"}}"#);
    let hash = format!("persist={:x}", md5::compute(A));
    // Nobody answered from A yet: a miss.
    let mut r = s.request(&[("cookie", hash.as_bytes())]);
    assert_eq!(s.handed_off(), None);
    s.respond(&mut r, from(A));
    assert_eq!(s.cookie(), hash.as_bytes());
    let mut other = s.worker();
    let _ = s.request_on(&mut other, &[("cookie", hash.as_bytes())]);
    assert_eq!(s.handed_off(), Some(b64(A)));
}

const TABLE: &str = r#"{"name":"p","type":"http_header","header":{"name":"x-user","servers":{"vip":"10.0.0.9:80"}},"timeout":"400s"}"#;

#[test]
fn table_binds_new_keys_then_reads_only_and_refreshes_at_a_quarter_of_the_timeout() {
    let mut s = Sim::new(TABLE);
    let mut r = s.request(&[("x-user", b"alice")]);
    assert_eq!(s.handed_off(), None);
    s.respond(&mut r, from(A));
    assert_eq!(s.stat("new"), 1);
    assert_eq!(s.stat("entries"), 1);
    // Within timeout/4: a read, no write.
    s.host.advance_ms(99_000);
    let mut r = s.request(&[("x-user", b"alice")]);
    assert_eq!(s.handed_off(), Some(b64(A)));
    s.respond(&mut r, from(A));
    assert_eq!(s.host.writes(), vec![]);
    // Past timeout/4: the use is written once.
    s.host.advance_ms(2_000);
    let mut r = s.request(&[("x-user", b"alice")]);
    s.respond(&mut r, from(A));
    assert_eq!(s.host.writes().len(), 1);
    let mut r = s.request(&[("x-user", b"alice")]);
    s.respond(&mut r, from(A));
    assert_eq!(s.host.writes(), vec![]);
    // No key: a miss, nothing named.
    let _ = s.request(&[]);
    assert_eq!(s.handed_off(), None);
    assert_eq!(s.stat("miss"), 2);
}

#[test]
fn table_rebinds_when_another_server_answered() {
    let mut s = Sim::new(TABLE);
    let mut r = s.request(&[("x-user", b"bob")]);
    s.respond(&mut r, from(A));
    let mut r = s.request(&[("x-user", b"bob")]);
    s.respond(&mut r, moved_to(B));
    assert_eq!(s.stat("rebind"), 1);
    let _ = s.request(&[("x-user", b"bob")]);
    assert_eq!(s.handed_off(), Some(b64(B)));
    // A local reply rebinds nothing.
    let mut r = s.request(&[("x-user", b"bob")]);
    s.respond(
        &mut r,
        Answer {
            upstream: Some(A),
            session_header: Some(A),
            details: "response_timeout",
        },
    );
    let _ = s.request(&[("x-user", b"bob")]);
    assert_eq!(s.handed_off(), Some(b64(B)));
}

#[test]
fn racing_workers_do_not_undo_each_other() {
    let mut s = Sim::new(TABLE);
    let mut w1 = s.worker();
    let mut w2 = s.worker();
    // Both see the key unbound; Envoy sends them to different servers.
    let mut r1 = s.request_on(&mut w1, &[("x-user", b"carol")]);
    let mut r2 = s.request_on(&mut w2, &[("x-user", b"carol")]);
    s.respond_on(&mut w1, &mut r1, from(A));
    s.respond_on(&mut w2, &mut r2, from(B));
    // The first binding wins.
    let _ = s.request(&[("x-user", b"carol")]);
    assert_eq!(s.handed_off(), Some(b64(A)));
    // Two rebinds seen on A: the second (still seeing A) must not undo the first's move.
    let mut r1 = s.request_on(&mut w1, &[("x-user", b"carol")]);
    let mut r2 = s.request_on(&mut w2, &[("x-user", b"carol")]);
    s.respond_on(&mut w1, &mut r1, moved_to(B));
    s.respond_on(&mut w2, &mut r2, from(A));
    let _ = s.request(&[("x-user", b"carol")]);
    assert_eq!(s.handed_off(), Some(b64(B)));
}

#[test]
fn the_static_header_map_wins_without_touching_the_table() {
    let mut s = Sim::new(TABLE);
    let mut r = s.request(&[("x-user", b"vip")]);
    assert_eq!(s.handed_off(), Some(b64("10.0.0.9:80")));
    assert_eq!(s.host.reads.get(), 1, "the key, no slot read");
    s.respond(&mut r, moved_to(A));
    assert_eq!(s.host.writes().len(), 1, "only Envoy's header removed");
    assert_eq!(s.stat("rebind"), 1);
    assert_eq!(s.stat("entries"), 0);
}

#[test]
fn app_cookie_learns_from_set_cookie_and_not_from_requests_unless_asked() {
    let mut s = Sim::new(r#"{"name":"p","type":"app_cookie"}"#);
    // A request's own value is not bound to whoever answered it...
    let mut r = s.request(&[("cookie", b"JSESSIONID=guess")]);
    s.respond(&mut r, from(A));
    assert_eq!(s.host.writes(), vec![]);
    // ...a server's Set-Cookie is.
    let mut r = s.request(&[]);
    s.host
        .with_response_header("set-cookie", b"JSESSIONID=s1; Path=/");
    s.respond(&mut r, from(B));
    let _ = s.request(&[("cookie", b"JSESSIONID=s1")]);
    assert_eq!(s.handed_off(), Some(b64(B)));
    let _ = s.request(&[(":path", b"/cart;jsessionid=s1?x=1")]);
    assert_eq!(s.handed_off(), Some(b64(B)));

    let mut s =
        Sim::new(r#"{"name":"p","type":"app_cookie","app_cookie":{"learn_from_request":true}}"#);
    let mut r = s.request(&[("cookie", b"JSESSIONID=mine")]);
    s.respond(&mut r, from(A));
    let _ = s.request(&[("cookie", b"JSESSIONID=mine")]);
    assert_eq!(s.handed_off(), Some(b64(A)));
}

#[test]
fn client_ip_and_consistent_hash_keys() {
    let mut s = Sim::new(r#"{"name":"p","type":"client_ip","client_ip":{"ipv4_prefix":24}}"#);
    s.host.next_request();
    s.host
        .with_property(&["source", "address"], b"192.0.2.7:5555");
    let mut r = Request::new();
    r.on_request_headers(&s.profile, &mut s.worker, &s.host);
    s.respond(&mut r, from(A));
    s.host.next_request();
    s.host
        .with_property(&["source", "address"], b"192.0.2.200:1");
    let mut r = Request::new();
    r.on_request_headers(&s.profile, &mut s.worker, &s.host);
    assert_eq!(s.handed_off(), Some(b64(A)), "same /24");

    let mut s =
        Sim::new(r#"{"name":"p","type":"consistent_hash","hash":{"source":{"header":"x-user"}}}"#);
    let mut r = s.request(&[("x-user", b"dave"), ("x-persist-hash", b"forged")]);
    assert_eq!(
        s.host.request_value("x-persist-hash"),
        Some(b"dave".to_vec())
    );
    s.respond(&mut r, from(A));
    assert_eq!(
        s.host.writes(),
        vec![Call::RemoveResponseHeader("x-persist-upstream".into())]
    );
    let _ = s.request(&[("x-persist-hash", b"forged")]);
    assert_eq!(s.host.request_value("x-persist-hash"), None);
    assert_eq!(s.stat("hit"), 1);
    assert_eq!(s.stat("miss"), 1);
}

#[test]
fn the_tick_sweeps_lapsed_entries_and_flushes_counts() {
    let mut s = Sim::new(
        r#"{"name":"p","type":"http_header","header":{"name":"x-user"},"timeout":"4s","max_entries":64}"#,
    );
    for i in 0..10 {
        let mut r = s.request(&[("x-user", format!("u{i}").as_bytes())]);
        s.respond(&mut r, from(A));
    }
    assert_eq!(s.stat("entries"), 10);
    assert_eq!(s.stat("new"), 10);
    s.host.advance_ms(5_000);
    // The sweep claims ranges once per second; a few ticks cover the small table.
    for _ in 0..4 {
        s.host.advance_ms(1_000);
        s.worker.tick(&s.profile, &s.host);
    }
    assert_eq!(s.stat("expired"), 10);
    assert_eq!(s.stat("entries"), 0);
    // Counts go out once.
    assert_eq!(s.stat("new"), 10);
}

#[test]
fn a_failing_store_is_an_error_never_a_failed_request() {
    let mut s = Sim::new(TABLE);
    s.host.store_broken.set(true);
    let mut r = s.request(&[("x-user", b"eve")]);
    s.respond(&mut r, from(A));
    // The binding, then the tick's sweep claim: each an `error`, neither a failed request.
    assert_eq!(s.stat("error"), 2);
}

const MIRRORED: &str = r#"{"name":"p","type":"http_header","header":{"name":"x-user"},"mirror":{"cluster":"etcd","prefix":"/m/","secret":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}}"#;

fn mirrored() -> Sim {
    let mut host = RecordingHost::new(NOW_MS);
    host.with_grpc = true;
    Sim::on(host, MIRRORED)
}

#[test]
fn a_local_miss_waits_for_the_mirror_lookup_then_hands_off() {
    let mut s = mirrored();
    s.host.next_request();
    s.host.with_request_header("x-user", b"frank");
    let mut r = Request::new();
    let action = r.on_request_headers(&s.profile, &mut s.worker, &s.host);
    assert_eq!(action, RequestAction::WaitForLookup);
    assert_eq!(
        s.host.writes(),
        vec![Call::GrpcCall("etcdserverpb.KV".into(), "Range".into())]
    );
    assert!(r.lookup().is_some());
    // etcd is down: the request goes on as a miss.
    r.on_lookup_answer(None, &s.profile, &mut s.worker, &s.host);
    assert_eq!(r.lookup(), None);
    assert_eq!(s.handed_off(), None);
    assert_eq!(s.stat("miss"), 1);
    assert_eq!(s.host.metric("persist.p.mirror_error"), 1);
    // The response binds the key and queues it for etcd.
    s.respond(&mut r, from(A));
    assert_eq!(s.worker.outbox.as_ref().unwrap().queued(), 1);
}

#[test]
fn the_watcher_loads_then_merges_watch_events_into_the_table() {
    let mut s = mirrored();
    let digest = s.profile.persistence.table().unwrap().hash(b"grace").digest;
    let mut driver = Driver::new(&s.profile, 7).unwrap();
    let mut w = s.worker();
    // This worker takes the watcher role and loads the prefix: one Range call (token 1).
    driver.tick(&s.profile, &mut w, &s.host);
    assert_eq!(
        s.host.writes(),
        vec![
            Call::StoreSet("persist.p.mirror.watcher".into()),
            Call::GrpcCall("etcdserverpb.KV".into(), "Range".into())
        ]
    );
    let empty = RangeResponse {
        header: Some(ResponseHeader {
            revision: 10,
            ..Default::default()
        }),
        ..Default::default()
    };
    s.host.calls.borrow_mut().clear();
    assert!(driver.on_call_response(1, Some(&empty.encode_to_vec()), &s.profile, &mut w, &s.host));
    assert_eq!(
        s.host.writes(),
        vec![Call::GrpcStream(
            "etcdserverpb.Watch".into(),
            "Watch".into()
        )]
    );
    let now_s = (NOW_MS / 1000) as u32;
    let setup = s.profile.mirror.as_ref().unwrap();
    let update = WatchResponse {
        events: vec![Event {
            r#type: EVENT_PUT,
            kv: Some(KeyValue {
                key: setup.keys.key(&digest),
                mod_revision: 11,
                value: encode_value(a(B), now_s, now_s, 0),
                lease: 1,
            }),
        }],
        ..Default::default()
    };
    // Another token is not the driver's stream.
    assert!(!driver.on_stream_message(99, &update.encode_to_vec(), &s.profile, &mut w, &s.host));
    let table = s.profile.persistence.table().unwrap();
    let key = table.key_of_digest(digest);
    assert_eq!(table.lookup(&s.host, key, now_s).unwrap(), None);
    assert!(driver.on_stream_message(2, &update.encode_to_vec(), &s.profile, &mut w, &s.host));
    assert_eq!(s.host.metric("persist.p.mirror_event"), 1);
    // Every worker now names B for that key; a merge is not a `new`.
    let _ = s.request(&[("x-user", b"grace")]);
    assert_eq!(s.handed_off(), Some(b64(B)));
    w.tick(&s.profile, &s.host);
    assert_eq!(s.host.metric("persist.p.entries"), 1);
    assert_eq!(s.stat("new"), 0);
    // The stream closes: counted, and the watch is reloaded later.
    assert!(driver.on_stream_close(2, &s.profile, &mut w, &s.host));
    assert_eq!(s.host.metric("persist.p.mirror_error"), 1);
}

#[test]
fn bad_configurations_name_their_field_and_a_host_without_grpc_refuses_the_mirror() {
    let host = RecordingHost::new(NOW_MS);
    let e =
        Profile::compile(br#"{"type":"http_cookie","cookie":{"nmae":"x"}}"#, &host).unwrap_err();
    assert!(e.contains("cookie"), "{e}");
    let e = Profile::compile(MIRRORED.as_bytes(), &host).unwrap_err();
    assert!(e.starts_with("invalid configuration: mirror:"), "{e}");
    // Refused before any stat is defined.
    assert!(host.metrics.borrow().is_empty());
}

const SESSION: &str = r#"{"name":"p","type":"session_header","session_header":{"keys":["j8+PHxERERHDw8PDWlpaWlpaWlpaWlpaWlpaWlpaWlo="]}}"#;

impl Sim {
    /// The token the response carried in `x-persist-session`.
    fn token(&self) -> Option<Vec<u8>> {
        let v = self.host.response_values("x-persist-session");
        assert!(v.len() <= 1, "one token at most: {v:?}");
        v.first().cloned()
    }
}

#[test]
fn session_header_issues_a_token_then_names_its_server_and_writes_nothing() {
    let mut s = Sim::new(SESSION);
    let mut r = s.request(&[]);
    s.respond(&mut r, from(A));
    assert_eq!(s.set_cookie(), None, "no cookie for this type");
    let token = s.token().expect("a token on the first response");
    assert_eq!(s.host.state(TYPE_STATE).as_deref(), Some("session_header"));

    let mut r = s.request(&[("x-persist-session", &token)]);
    assert_eq!(s.handed_off(), Some(b64(A)));
    s.respond(&mut r, from(A));
    assert_eq!(s.host.writes(), vec![], "steady: nothing written");
    assert_eq!(s.token(), None);
    // A cookie of ours is not read by this type.
    let _ = s.request(&[("cookie", b"persist=whatever")]);
    assert_eq!(s.handed_off(), None);
    assert_eq!((s.stat("new"), s.stat("hit"), s.stat("miss")), (1, 1, 2));
}

#[test]
fn session_header_rebinds_refreshes_and_rejects_what_it_did_not_seal() {
    let mut s = Sim::new(SESSION);
    let mut r = s.request(&[]);
    s.respond(&mut r, from(A));
    let token = s.token().unwrap();
    // Failover: Envoy used B.
    let mut r = s.request(&[("x-persist-session", &token)]);
    s.respond(
        &mut r,
        Answer {
            upstream: Some(B),
            session_header: Some(B),
            details: "via_upstream",
        },
    );
    let moved = s.token().expect("re-issued for B");
    assert_eq!(s.stat("rebind"), 1);
    let _ = s.request(&[("x-persist-session", &moved)]);
    assert_eq!(s.handed_off(), Some(b64(B)));
    // Tampered: invalid, load balanced, a new token issued.
    let mut bad = moved.clone();
    let last = bad.len() - 1;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let mut r = s.request(&[("x-persist-session", &bad)]);
    assert_eq!(s.handed_off(), None);
    s.respond(&mut r, from(A));
    assert!(s.token().is_some());
    assert_eq!(s.stat("invalid"), 1);
    // Past half the timeout (20m): refreshed with the same server.
    s.host.advance_ms(11 * 60 * 1000);
    let mut r = s.request(&[("x-persist-session", &moved)]);
    s.respond(&mut r, from(B));
    let refreshed = s.token().expect("refresh");
    assert_ne!(refreshed, moved);
    // An upstream's own copy of the header never reaches the client beside ours.
    let mut r = s.request(&[]);
    s.host
        .with_response_header("x-persist-session", b"from-upstream");
    s.respond(&mut r, from(A));
    assert_eq!(s.host.response_values("x-persist-session").len(), 1);
    assert_ne!(s.token().unwrap(), b"from-upstream".to_vec());
    // A local reply issues nothing.
    let mut r = s.request(&[]);
    s.respond(&mut r, local_reply(None, "no_healthy_upstream"));
    assert_eq!(s.token(), None);
}

#[test]
fn session_header_generates_one_key_per_envoy_shared_by_workers() {
    let json = r#"{"name":"p","type":"session_header"}"#;
    let mut s = Sim::new(json);
    let mut r = s.request(&[]);
    s.respond(&mut r, from(A));
    let token = s.token().unwrap();
    // Another worker of the same Envoy compiles the same profile: same key.
    let profile = Profile::compile(json.as_bytes(), &s.host).unwrap();
    let mut w = Worker::new(&profile, &s.host).unwrap();
    s.host.next_request();
    s.host.with_request_header("x-persist-session", &token);
    let mut r = Request::new();
    r.on_request_headers(&profile, &mut w, &s.host);
    assert_eq!(s.handed_off(), Some(b64(A)));
    // Another Envoy (another host) does not open it.
    let host = RecordingHost::new(NOW_MS);
    let mut skip = [0u8; 5];
    assert!(
        crate::host::Host::random(&host, &mut skip),
        "another random sequence"
    );
    let mut other = Sim::on(host, json);
    let _ = other.request(&[("x-persist-session", &token)]);
    assert_eq!(other.handed_off(), None);
    assert_eq!(other.stat("invalid"), 1);
}

fn ingress_value(backend: &str, addr: &str) -> String {
    crate::codec::ingress_nginx::encode(
        backend.as_bytes(),
        &crate::codec::ingress_nginx::backend_key(backend),
        a(addr),
    )
}

#[test]
fn ingress_nginx_cookies_with_endpoints_honour_both_modes_from_the_first_request() {
    let mut s = Sim::new(&format!(
        r#"{{"name":"p","type":"http_cookie","cookie":{{"name":"INGRESSCOOKIE","format":"ingress_nginx",
        "ingress_nginx":{{"backend":"default-web-80","endpoints":["{A}","{B}"]}}}}}}"#
    ));
    let bk = crate::codec::ingress_nginx::backend_key("default-web-80");
    // persistent: the salted hash of B names B, nothing to re-send.
    let persistent = format!("INGRESSCOOKIE={}", ingress_value("default-web-80", B));
    let mut r = s.request(&[("cookie", persistent.as_bytes())]);
    assert_eq!(s.handed_off(), Some(b64(B)));
    s.respond(&mut r, from(B));
    assert_eq!(s.set_cookie(), None);
    // balanced: the ring names a server; the answer upgrades the cookie to persistent form.
    let ring = crate::codec::ingress_nginx::Ring::new(&[a(A), a(B)]);
    let key = "1800000000.123.4567";
    let on = ring.find(key.as_bytes()).unwrap().to_string();
    let balanced = format!("INGRESSCOOKIE={key}|{bk}");
    let mut r = s.request(&[("cookie", balanced.as_bytes())]);
    assert_eq!(s.handed_off(), Some(b64(&on)));
    s.respond(&mut r, from(&on));
    assert_eq!(
        s.set_cookie().unwrap(),
        format!(
            "INGRESSCOOKIE={}; Path=/; HttpOnly",
            ingress_value("default-web-80", &on)
        )
    );
    // Another backend's cookie: invalid, a new one for the server that answered.
    let other = format!(
        "INGRESSCOOKIE={}",
        ingress_value("default-other-80", B).replace(&bk, "0")
    );
    let mut r = s.request(&[("cookie", other.as_bytes())]);
    assert_eq!(s.handed_off(), None);
    s.respond(&mut r, from(A));
    assert!(s.set_cookie().is_some());
    assert_eq!((s.stat("hit"), s.stat("invalid"), s.stat("new")), (2, 1, 1));
}

#[test]
fn ingress_nginx_persistent_keys_are_learned_from_answers_without_endpoints() {
    let mut s = Sim::new(
        r#"{"name":"p","type":"http_cookie","cookie":{"format":"ingress_nginx","ingress_nginx":{"backend":"ns-svc-8080"}}}"#,
    );
    let cookie = format!("persist={}", ingress_value("ns-svc-8080", B));
    let _ = s.request(&[("cookie", cookie.as_bytes())]);
    assert_eq!(s.handed_off(), None, "B never answered here: unknown");
    let mut r = s.request(&[]);
    s.respond(&mut r, from(B));
    assert_eq!(
        s.set_cookie().unwrap(),
        format!("{cookie}; Path=/; HttpOnly"),
        "the filter writes ingress-nginx's persistent form"
    );
    let mut other = s.worker();
    let _ = s.request_on(&mut other, &[("cookie", cookie.as_bytes())]);
    assert_eq!(s.handed_off(), Some(b64(B)), "learned, for every worker");
    // A balanced key cannot be mapped without the endpoints: a miss.
    let bk = crate::codec::ingress_nginx::backend_key("ns-svc-8080");
    let _ = s.request(&[("cookie", format!("persist=1800000000.1.2|{bk}").as_bytes())]);
    assert_eq!(s.handed_off(), None);
    assert_eq!((s.stat("invalid"), s.stat("miss")), (0, 3));
}

const CLUSTERS: &str = r#""clusters":{"allow":["blue","green"]}"#;

/// Envoy routed the request to `cluster` (its `xds.cluster_name`).
fn routed_to(s: &Sim, cluster: &str) {
    s.host
        .with_property(&["xds", "cluster_name"], cluster.as_bytes());
}

#[test]
fn a_cookie_records_its_cluster_and_hands_both_back() {
    let json = format!(r#"{{"name":"p","type":"http_cookie",{KEY},{CLUSTERS}}}"#);
    let mut s = Sim::new(&json);
    // A new client: the route's weights choose; the cluster header is removed, present or
    // not (Envoy then chooses the route again).
    for sent in [&[("x-persist-cluster", &b"blue"[..])][..], &[]] {
        let _ = s.request(sent);
        assert_eq!(
            s.host.writes(),
            vec![Call::RemoveRequestHeader("x-persist-cluster".into())]
        );
    }
    let mut r = s.request(&[("x-persist-cluster", b"blue")]);
    routed_to(&s, "green");
    s.respond(&mut r, from(A));
    let cookie = s.cookie();
    // The cookie names A in green: both handed back, even when the client asks for blue.
    let mut r = s.request(&[("cookie", &cookie), ("x-persist-cluster", b"blue")]);
    assert_eq!(s.handed_off(), Some(b64(A)));
    assert_eq!(
        s.host.request_value("x-persist-cluster").as_deref(),
        Some(&b"green"[..])
    );
    // A answered: the named cluster did; no property read, nothing written.
    s.respond(&mut r, from(A));
    assert_eq!(s.host.writes(), vec![]);
    assert_eq!(s.host.reads.get(), 1);
    assert_eq!(s.stat("hit"), 1);
    // Envoy moved the client to B, still in green: a rebinding within the cluster.
    let mut r = s.request(&[("cookie", &cookie)]);
    routed_to(&s, "green");
    s.respond(&mut r, moved_to(B));
    assert_eq!(s.stat("rebind"), 1);
    let moved = s.cookie();
    let _ = s.request(&[("cookie", &moved)]);
    assert_eq!(s.handed_off(), Some(b64(B)));
    assert_eq!(
        s.host.request_value("x-persist-cluster").as_deref(),
        Some(&b"green"[..])
    );
}

#[test]
fn a_cluster_taken_off_the_allow_list_rebinds_its_clients_cleanly() {
    let json = format!(r#"{{"name":"p","type":"http_cookie",{KEY},{CLUSTERS}}}"#);
    let mut s = Sim::new(&json);
    let mut r = s.request(&[]);
    routed_to(&s, "green");
    s.respond(&mut r, from(A));
    let cookie = s.cookie();
    // The same Envoy, green no longer allowed.
    let only_blue =
        format!(r#"{{"name":"p","type":"http_cookie",{KEY},"clusters":{{"allow":["blue"]}}}}"#);
    let mut s = Sim::on(s.host, &only_blue);
    let mut r = s.request(&[("cookie", &cookie)]);
    assert_eq!(s.handed_off(), None, "neither server nor cluster is named");
    assert_eq!(s.host.request_value("x-persist-cluster"), None);
    routed_to(&s, "blue");
    s.respond(&mut r, from(B));
    assert_eq!(s.stat("rebind"), 1);
    assert_eq!(s.stat("new"), 1);
    assert_eq!(s.stat("error"), 0);
    let _ = s.request(&[("cookie", &s.cookie())]);
    assert_eq!(
        s.host.request_value("x-persist-cluster").as_deref(),
        Some(&b"blue"[..])
    );
}

#[test]
fn a_cookie_from_before_clusters_keeps_its_server_and_learns_its_cluster() {
    let mut s = Sim::new(&format!(r#"{{"name":"p","type":"http_cookie",{KEY}}}"#));
    let mut r = s.request(&[]);
    s.respond(&mut r, from(A));
    let old = s.cookie();
    let json = format!(r#"{{"name":"p","type":"http_cookie",{KEY},{CLUSTERS}}}"#);
    let mut s = Sim::on(s.host, &json);
    let mut r = s.request(&[("cookie", &old)]);
    assert_eq!(s.handed_off(), Some(b64(A)));
    assert_eq!(s.host.request_value("x-persist-cluster"), None);
    routed_to(&s, "blue");
    s.respond(&mut r, from(A));
    assert_eq!(s.stat("rebind"), 0, "same server: not a rebinding");
    let learned = s.cookie();
    let _ = s.request(&[("cookie", &learned)]);
    assert_eq!(
        s.host.request_value("x-persist-cluster").as_deref(),
        Some(&b"blue"[..])
    );
}

#[test]
fn a_table_entry_records_its_cluster() {
    let json = TABLE.replacen('{', &format!("{{{CLUSTERS},"), 1);
    let mut s = Sim::new(&json);
    let mut r = s.request(&[("x-user", b"carol")]);
    routed_to(&s, "blue");
    s.respond(&mut r, from(A));
    let mut r = s.request(&[("x-user", b"carol"), ("x-persist-cluster", b"green")]);
    assert_eq!(s.handed_off(), Some(b64(A)));
    assert_eq!(
        s.host.request_value("x-persist-cluster").as_deref(),
        Some(&b"blue"[..])
    );
    s.respond(&mut r, from(A));
    assert_eq!(s.host.writes(), vec![], "a steady hit writes nothing");
    // Another cluster than the allowed ones answered: nothing recorded of it.
    let mut r = s.request(&[("x-user", b"dave")]);
    routed_to(&s, "canary");
    s.respond(&mut r, from(B));
    let _ = s.request(&[("x-user", b"dave")]);
    assert_eq!(s.handed_off(), Some(b64(B)));
    assert_eq!(s.host.request_value("x-persist-cluster"), None);
}

#[test]
fn clusters_are_refused_where_nothing_can_record_them() {
    for (json, field) in [
        (
            format!(r#"{{"type":"http_cookie","cookie":{{"format":"envoy"}},{CLUSTERS}}}"#),
            "clusters",
        ),
        (
            format!(
                r#"{{"type":"consistent_hash","hash":{{"source":{{"header":"x-u"}}}},{CLUSTERS}}}"#
            ),
            "clusters",
        ),
        (
            r#"{"type":"http_cookie","clusters":{"allow":["a"],"header":"x-persist-upstream"}}"#
                .to_string(),
            "clusters.header",
        ),
        (
            r#"{"type":"session_header","clusters":{"allow":["a"],"header":"x-persist-session"}}"#
                .to_string(),
            "clusters.header",
        ),
    ] {
        let e = Profile::compile(json.as_bytes(), &RecordingHost::new(NOW_MS)).unwrap_err();
        assert!(
            e.starts_with(&format!("invalid configuration: {field}: ")),
            "{json}: {e}"
        );
    }
}

#[test]
fn the_native_host_asks_envoy_to_choose_the_route_again_after_the_cluster_header() {
    let mut host = RecordingHost::new(NOW_MS);
    host.native_override = true;
    let json = format!(r#"{{"name":"p","type":"http_cookie",{KEY},{CLUSTERS}}}"#);
    let mut s = Sim::on(host, &json);
    // A new client: the client's header is removed, then the route chosen again.
    let mut r = s.request(&[("x-persist-cluster", b"blue")]);
    assert_eq!(
        s.host.writes(),
        vec![
            Call::RemoveRequestHeader("x-persist-cluster".into()),
            Call::RechooseRoute
        ]
    );
    routed_to(&s, "green");
    s.respond(&mut r, from(A));
    let cookie = s.cookie();
    // A steady client: the server through the override, the cluster in the header, then
    // the route chosen again from it.
    let _ = s.request(&[("cookie", &cookie), ("x-persist-cluster", b"blue")]);
    assert_eq!(
        s.host.writes(),
        vec![
            Call::OverrideUpstream(a(A), false),
            Call::SetRequestHeader("x-persist-cluster".into(), b"green".to_vec()),
            Call::RechooseRoute
        ]
    );
}

#[test]
fn without_access_log_state_the_steady_response_sets_no_filter_state() {
    let json = format!(r#"{{"name":"p","type":"http_cookie","access_log_state":false,{KEY}}}"#);
    let mut s = Sim::new(&json);
    let mut r = s.request(&[]);
    s.respond(&mut r, from(A));
    let cookie = s.cookie();
    let mut r = s.request(&[("cookie", &cookie)]);
    s.respond(&mut r, from(A));
    assert_eq!(s.host.state(DECISION_STATE), None);
    assert_eq!(s.host.state(TYPE_STATE), None);
    assert_eq!(s.host.writes(), vec![]);
    assert_eq!(s.stat("hit"), 1, "the counters do not depend on it");
}
