//! The agent's metrics (prefix `ipwarden_`). kube-router exports none for
//! ipset membership or drift; these are the ones its issue 1732 called for.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::sync_metrics::SyncMetrics;
use crate::{
    bpf::events::{EventKind, EventSink},
    reconcile::{driver::SyncCounts, ReconcileReport},
    store::AuditReport,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// "ok", or the error's metric label.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    /// "NAMESPACE/NAME".
    policy: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    /// "NAMESPACE/NAME".
    service: String,
}

/// What a kernel counter added since the last read of `seen` (a rewritten
/// rule counts from 0 again: all it holds is new).
fn added<K: Ord + Clone>(seen: &Mutex<BTreeMap<K, u64>>, key: &K, now: u64) -> u64 {
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    let before = seen.insert(key.clone(), now).unwrap_or(0);
    if now >= before {
        now - before
    } else {
        now
    }
}

/// Every metric, cheap to clone (the values are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ResultLabel, Counter>,
    reconcile_seconds: Histogram,
    virtual_services: Gauge,
    input_problems: Gauge,
    /// The input's problems of each controller's last sync, summed into
    /// `input_problems`.
    problems: Arc<Mutex<BTreeMap<&'static str, usize>>>,
    ipvs_changes: Counter,
    set_member_changes: Counter,
    audits: Counter,
    drift: Family<KindLabel, Counter>,
    pub bpf_events: BpfEventCounters,
    policy_denied: Family<PolicyLabel, Counter>,
    /// The kernel's counters as last read, to add only what is new (a
    /// rewritten chain starts again at 0).
    policy_denied_seen: Arc<Mutex<BTreeMap<(String, String), u64>>>,
    no_local_endpoint: Family<ServiceLabel, Counter>,
    no_local_endpoint_seen: Arc<Mutex<BTreeMap<String, u64>>>,
    /// The daemon loop's metrics, readiness and health.
    pub sync: SyncMetrics,
    /// How long work may wait unsynced before /healthz fails.
    queued_limit: Arc<Mutex<Duration>>,
    ready: Arc<AtomicBool>,
    unreadable_objects: Family<KindLabel, Gauge>,
    /// Why the source is unhealthy (a kind not listed in time), if it is.
    source_unhealthy: Arc<Mutex<Option<String>>>,
}

/// The event reader's counters, by event kind.
#[derive(Clone, Debug, Default)]
pub struct BpfEventCounters {
    pub would_be_rejected: Counter,
    pub rescued: Counter,
}

impl EventSink for BpfEventCounters {
    fn event(&self, kind: EventKind) {
        match kind {
            EventKind::Rescued => self.rescued.inc(),
            EventKind::WouldBeRejected => self.would_be_rejected.inc(),
        };
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("ipwarden");
        let m = Self {
            registry: Arc::new(Registry::default()),
            reconciles: Family::default(),
            reconcile_seconds: Histogram::new([0.001, 0.005, 0.02, 0.1, 0.5, 2.0, 10.0, 60.0]),
            virtual_services: Gauge::default(),
            input_problems: Gauge::default(),
            problems: Arc::default(),
            ipvs_changes: Counter::default(),
            set_member_changes: Counter::default(),
            audits: Counter::default(),
            drift: Family::default(),
            bpf_events: BpfEventCounters::default(),
            policy_denied: Family::default(),
            policy_denied_seen: Arc::default(),
            no_local_endpoint: Family::default(),
            no_local_endpoint_seen: Arc::default(),
            sync: SyncMetrics::new(&mut r),
            queued_limit: Arc::new(Mutex::new(Duration::from_secs(60))),
            ready: Arc::new(AtomicBool::new(false)),
            unreadable_objects: Family::default(),
            source_unhealthy: Arc::default(),
        };
        r.register(
            "unreadable_objects",
            "Objects that cannot be read, by kind: each keeps its last good version, or isolates its namespace (a NetworkPolicy never read)",
            m.unreadable_objects.clone(),
        );
        r.register(
            "reconciles",
            "Reconcile passes by result",
            m.reconciles.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time to program one snapshot",
            m.reconcile_seconds.clone(),
        );
        r.register(
            "virtual_services",
            "IPVS virtual services desired",
            m.virtual_services.clone(),
        );
        r.register(
            "input_problems",
            "Objects or fields skipped or ignored in the last pass",
            m.input_problems.clone(),
        );
        r.register(
            "ipvs_changes",
            "IPVS services and destinations added, edited or removed",
            m.ipvs_changes.clone(),
        );
        r.register(
            "set_member_changes",
            "ipset members added or deleted by applies",
            m.set_member_changes.clone(),
        );
        r.register(
            "set_audits",
            "Audits of kernel sets against desired state",
            m.audits.clone(),
        );
        r.register(
            "set_drift",
            "Drift found by the auditor: members missing or unexpected, sets missing or of the wrong type, mirror entries wrong",
            m.drift.clone(),
        );
        r.register(
            "policy_denied_packets",
            "Packets REJECTed by the pod firewall, per policy isolating the pod and direction",
            m.policy_denied.clone(),
        );
        r.register(
            "service_no_local_endpoint_rejected_packets",
            "Packets REJECTed at a frontend of traffic policy Local without an endpoint on this node, per Service",
            m.no_local_endpoint.clone(),
        );
        let events = Family::<KindLabel, Counter>::default();
        r.register(
            "bpf_events",
            "Connections to a service port that the ipset lacked, by what happened",
            events.clone(),
        );
        // The event reader increments these two directly. One statement
        // each: get_or_create's read guard must be gone before the next
        // call takes the write lock.
        let would_be_rejected = events
            .get_or_create(&KindLabel {
                kind: "would_be_rejected".into(),
            })
            .clone();
        let rescued = events
            .get_or_create(&KindLabel {
                kind: "rescued".into(),
            })
            .clone();
        let mut m = m;
        m.bpf_events = BpfEventCounters {
            would_be_rejected,
            rescued,
        };
        m.registry = Arc::new(r);
        m
    }

    /// `run --once`'s pass: the same metrics as a daemon's sync, and ready.
    pub fn record_reconcile(&self, result: &Result<&ReconcileReport, &'static str>) {
        match result {
            Ok(report) => {
                self.record_sync("once", true, Ok((&report.counts(), report.duration)));
                self.ready.store(true, Ordering::Relaxed);
            }
            Err(label) => self.record_sync("once", true, Err(label)),
        }
    }

    /// One sync of `controller` (the daemon's observer, and `--once`):
    /// reconciles by result, its duration, the virtual services desired,
    /// the input's problems (summed over controllers; only a `full` sync
    /// sees every object, a partial one only the changed ones' problems),
    /// IPVS and set changes.
    pub fn record_sync(
        &self,
        controller: &'static str,
        full: bool,
        result: Result<(&SyncCounts, Duration), &'static str>,
    ) {
        let label = match result {
            Ok((counts, duration)) => {
                self.reconcile_seconds.observe(duration.as_secs_f64());
                if let Some(n) = counts.virtual_services {
                    self.virtual_services.set(n as i64);
                }
                if full {
                    let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
                    problems.insert(controller, counts.problems);
                    self.input_problems
                        .set(problems.values().sum::<usize>() as i64);
                }
                self.ipvs_changes.inc_by(counts.ipvs_changes);
                self.set_member_changes.inc_by(counts.set_member_changes);
                "ok"
            }
            Err(label) => label,
        };
        self.reconciles
            .get_or_create(&ResultLabel {
                result: label.to_string(),
            })
            .inc();
    }

    /// Takes the kernel's denied-packet counters per (policy, direction).
    pub fn record_policy_denied(&self, now: &BTreeMap<(String, String), u64>) {
        for (key, &packets) in now {
            let new = added(&self.policy_denied_seen, key, packets);
            self.policy_denied
                .get_or_create(&PolicyLabel {
                    policy: key.0.clone(),
                    direction: key.1.clone(),
                })
                .inc_by(new);
        }
    }

    /// Takes the kernel's counters of refused unserved frontends, per
    /// Service "NAMESPACE/NAME".
    pub fn record_no_local_endpoint(&self, now: &BTreeMap<String, u64>) {
        for (service, &packets) in now {
            let new = added(&self.no_local_endpoint_seen, service, packets);
            self.no_local_endpoint
                .get_or_create(&ServiceLabel {
                    service: service.clone(),
                })
                .inc_by(new);
        }
    }

    pub fn record_audit(&self, a: &AuditReport) {
        self.audits.inc();
        for (kind, n) in [
            ("members_missing", a.members_missing),
            ("members_unexpected", a.members_unexpected),
            ("sets_missing", a.sets_missing),
            ("sets_wrong_type", a.sets_wrong_type),
            ("mirror_entries_wrong", a.mirror_entries_wrong),
        ] {
            self.drift
                .get_or_create(&KindLabel { kind: kind.into() })
                .inc_by(n as u64);
        }
    }

    /// True once a pass has programmed the kernel (`--once`), or once every
    /// controller of the daemon has finished a full sync.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) || self.sync.ready()
    }

    /// How long a controller may have work queued without syncing before
    /// /healthz fails (kube-proxy's rule).
    pub fn set_queued_limit(&self, limit: Duration) {
        *self.queued_limit.lock().unwrap_or_else(|p| p.into_inner()) = limit;
    }

    /// The objects that cannot be read now, by kind.
    pub fn set_unreadable(&self, by_kind: &BTreeMap<String, usize>) {
        for kind in [
            "Service",
            "EndpointSlice",
            "Pod",
            "Namespace",
            "NetworkPolicy",
            "Node",
        ] {
            self.unreadable_objects
                .get_or_create(&KindLabel { kind: kind.into() })
                .set(by_kind.get(kind).copied().unwrap_or(0) as i64);
        }
    }

    /// Makes /healthz fail with `why` (None: the source is healthy).
    pub fn set_source_unhealthy(&self, why: Option<String>) {
        *self
            .source_unhealthy
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Err names the controllers stuck with queued work, or the source's
    /// resources not listed in time.
    pub fn health(&self) -> Result<(), String> {
        if let Some(why) = self
            .source_unhealthy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(why);
        }
        let limit = *self.queued_limit.lock().unwrap_or_else(|p| p.into_inner());
        let stuck = self.sync.stuck(limit);
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "work queued for more than {}s without a sync: {}",
                limit.as_secs(),
                stuck.join(", ")
            ))
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_up_under_their_names() {
        let m = Metrics::new();
        m.bpf_events.event(EventKind::WouldBeRejected);
        m.record_audit(&AuditReport {
            members_missing: 2,
            ..AuditReport::default()
        });
        m.record_reconcile(&Err("ipvs"));
        let text = m.encode();
        assert!(
            text.contains("ipwarden_bpf_events_total{kind=\"would_be_rejected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ipwarden_bpf_events_total{kind=\"rescued\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("ipwarden_set_drift_total{kind=\"members_missing\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ipwarden_reconciles_total{result=\"ipvs\"} 1"),
            "{text}"
        );
        assert!(!m.ready(), "a failed pass is not ready");
    }

    #[test]
    fn input_problems_are_every_objects_as_the_last_full_syncs_counted() {
        use crate::reconcile::driver::SyncCounts;
        let m = Metrics::new();
        let problems = |n| SyncCounts {
            problems: n,
            ..SyncCounts::default()
        };
        let d = Duration::from_millis(1);
        m.record_sync("services", true, Ok((&problems(2), d)));
        m.record_sync("policies", true, Ok((&problems(1), d)));
        // A partial sync saw one changed Service's problem, not the others'.
        m.record_sync("services", false, Ok((&problems(1), d)));
        assert!(m.encode().contains("ipwarden_input_problems 3\n"));
        m.record_sync("services", true, Ok((&problems(0), d)));
        assert!(m.encode().contains("ipwarden_input_problems 1\n"));
    }

    #[test]
    fn policy_denials_count_what_the_kernel_added_since_the_last_read() {
        let m = Metrics::new();
        let read = |n: u64| BTreeMap::from([(("x/deny".to_string(), "ingress".to_string()), n)]);
        m.record_policy_denied(&read(3));
        m.record_policy_denied(&read(5));
        // The chain was rewritten: the kernel counts from 0 again.
        m.record_policy_denied(&read(2));
        let text = m.encode();
        assert!(
            text.contains(
                "ipwarden_policy_denied_packets_total{policy=\"x/deny\",direction=\"ingress\"} 7"
            ),
            "{text}"
        );
    }

    #[test]
    fn refusals_without_a_local_endpoint_count_per_service() {
        let m = Metrics::new();
        m.record_no_local_endpoint(&BTreeMap::from([("shop/web".to_string(), 2)]));
        m.record_no_local_endpoint(&BTreeMap::from([("shop/web".to_string(), 5)]));
        let text = m.encode();
        assert!(
            text.contains(
                "ipwarden_service_no_local_endpoint_rejected_packets_total{service=\"shop/web\"} 5"
            ),
            "{text}"
        );
    }
}
