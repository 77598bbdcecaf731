//! Cookie value codecs (README "Cookie formats and migration"). Each turns a server (and, where the format has them,
//! timestamps) into a cookie value and back. Decoders take raw client bytes and never panic.
//!
//! - [`sealed`]: AES-256-GCM, tamper-proof and opaque (the default).
//! - [`envoy`]: what Envoy's native cookie session state writes (protobuf) and its legacy form.
//! - [`nginx`]: NGINX Plus `sticky cookie` (MD5 of `ip:port`, resolved through learned hashes).
//! - [`bigip`]: BIG-IP cookie insert (encoded IPv4 and port).
//! - [`ingress_nginx`]: ingress-nginx's affinity cookie (salted MD5 or a ring key).

pub mod bigip;
pub mod envoy;
pub mod gcm;
pub mod ingress_nginx;
pub mod nginx;
pub mod sealed;

use std::net::SocketAddr;

/// What a cookie says, once decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A server, with the timestamps the format carries and the tag of the cluster it
    /// was recorded in (sealed only; 0: none, README "Weighted clusters").
    Server {
        addr: SocketAddr,
        times: Times,
        cluster: u32,
    },
    /// An NGINX hash, to be resolved through the hashes learned from responses.
    Hash([u8; 16]),
}

/// Timestamps carried by a cookie (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Times {
    /// The format carries no time (nginx, bigip, legacy envoy).
    #[default]
    None,
    /// Sealed: first issue and last refresh.
    Sealed { issued: u32, refreshed: u32 },
    /// Accepted in an older or foreign form (an ingress-nginx `balanced` or pre-backend-key
    /// cookie): re-sent in the format's current form.
    Legacy,
    /// Envoy: an expiry instant. Values below [`envoy::WALL_CLOCK_FLOOR`] come from
    /// Envoy's monotonic clock and cannot be checked here.
    Expires(u64),
}
