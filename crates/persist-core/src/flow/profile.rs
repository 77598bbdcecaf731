//! A profile compiled from a valid configuration: the persistence of its kind, its stats,
//! and the shared services (suspect list, mirror). Immutable once compiled; every worker of
//! an Envoy compiles the same one from the same JSON.

use crate::config::Config;
use crate::host::{Host, MetricId, MetricKind};
use crate::mirror::driver::MirrorSetup;
use crate::persistence::Persistence;
use crate::stats::{self, Counter};

#[derive(Debug)]
pub struct Profile {
    pub config: Config,
    pub persistence: Persistence,
    /// One id per [`Counter::ALL`], in that order.
    pub(crate) counters: [MetricId; Counter::ALL.len()],
    /// The `entries` gauge (locally stored types).
    pub(crate) entries_gauge: Option<MetricId>,
    /// The `handoff_ignored` counter (README "Stats").
    pub(crate) handoff_ignored: MetricId,
    /// Shared-data key of the suspect list (README "Failover").
    pub(crate) suspect_key: String,
    /// README "More than one Envoy", when configured.
    pub mirror: Option<MirrorSetup>,
}

/// `strict` on a host that hands the server to Envoy through a header: Envoy's filter after
/// this one decides then, and its own `strict` is the one that counts.
pub const STRICT_NEEDS_OVERRIDE: &str = "invalid configuration: strict: only the native module \
    names the server itself; with the wasm module set `strict: true` on the stateful_session \
    filter instead";

/// `mirror` on a host without a gRPC client (the native module).
pub const MIRROR_NEEDS_GRPC: &str =
    "invalid configuration: mirror: this build of the filter cannot reach etcd (no gRPC client)";

/// Defines stat `stat` of profile `profile`, or says which one could not be.
pub(crate) fn define_stat(
    host: &dyn Host,
    kind: MetricKind,
    profile: &str,
    stat: &str,
) -> Result<MetricId, String> {
    let name = stats::named(profile, stat);
    host.define_metric(kind, &name)
        .map_err(|_| format!("name: cannot define stat {name}"))
}

impl Profile {
    /// Validates `json` completely before touching anything, then prepares the profile.
    /// The error is the one log line Envoy shows: it names the field.
    pub fn compile(json: &[u8], host: &dyn Host) -> Result<Profile, String> {
        let config = Config::parse(json).map_err(|e| e.to_string())?;
        if config.strict && !host.has_upstream_override() {
            return Err(STRICT_NEEDS_OVERRIDE.to_string());
        }
        if config.mirror.is_some() && host.grpc().is_none() {
            return Err(MIRROR_NEEDS_GRPC.to_string());
        }
        let persistence = Persistence::compile(&config, host)?;
        let mut counters = [0; Counter::ALL.len()];
        for (id, c) in counters.iter_mut().zip(Counter::ALL) {
            *id = define_stat(host, MetricKind::Counter, &config.name, c.name())?;
        }
        let entries_gauge = match persistence.table() {
            Some(_) => Some(define_stat(
                host,
                MetricKind::Gauge,
                &config.name,
                stats::ENTRIES,
            )?),
            None => None,
        };
        let handoff_ignored = define_stat(
            host,
            MetricKind::Counter,
            &config.name,
            stats::HANDOFF_IGNORED,
        )?;
        let mirror = match &config.mirror {
            Some(m) => Some(MirrorSetup::new(m, &config.name, host)?),
            None => None,
        };
        Ok(Profile {
            suspect_key: format!("persist.{}.suspect", config.name),
            config,
            persistence,
            counters,
            entries_gauge,
            handoff_ignored,
            mirror,
        })
    }

    pub(crate) fn counter_id(&self, c: Counter) -> Option<MetricId> {
        Counter::ALL
            .iter()
            .position(|x| *x == c)
            .and_then(|i| self.counters.get(i).copied())
    }
}
