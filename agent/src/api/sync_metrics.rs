//! The loop's metrics, after kube-proxy's: sync durations by controller and
//! kind, last-queued and last-synced timestamps, network programming
//! latency, source failures; and from them readiness (every controller has
//! finished a full sync) and health (no controller has had work queued for
//! longer than a limit without syncing).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::reconcile::{
    driver::{SyncDone, SyncError, SyncObserver},
    schedule::{FullReason, SyncKind},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabel {
    controller: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    controller: String,
    kind: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    controller: String,
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: String,
}

/// Where each controller stands, for readiness and health.
#[derive(Clone, Debug, Default)]
struct Standing {
    full_synced: bool,
    queued_since: Option<Instant>,
}

#[derive(Clone)]
pub struct SyncMetrics {
    durations: Family<SyncLabel, Histogram>,
    cpu: Family<SyncLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    steps: Family<StepLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    syncs: Family<ResultLabel, Counter>,
    last_queued: Family<ControllerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    last_synced: Family<ControllerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    programming: Histogram,
    source_failing: Family<ResourceLabel, Gauge>,
    overlaps: Family<ControllerLabel, Counter>,
    standing: Arc<Mutex<BTreeMap<&'static str, Standing>>>,
}

/// kube-proxy's buckets for network programming latency: 0.25 s to 5 min.
fn programming_buckets() -> Vec<f64> {
    let mut b = vec![0.25, 0.5];
    b.extend((1..=59).map(f64::from));
    b.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    b.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    b
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl SyncMetrics {
    pub fn new(r: &mut Registry) -> Self {
        let m = Self {
            durations: Family::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.001, 2.0, 15,
                ))
            }),
            cpu: Family::default(),
            steps: Family::default(),
            syncs: Family::default(),
            last_queued: Family::default(),
            last_synced: Family::default(),
            programming: Histogram::new(programming_buckets()),
            source_failing: Family::default(),
            overlaps: Family::default(),
            standing: Arc::default(),
        };
        r.register(
            "sync_overlaps",
            "Syncs that started while another controller's sync was under way (both writing through the set store)",
            m.overlaps.clone(),
        );
        r.register(
            "sync_duration_seconds",
            "Duration of a controller's sync, by kind (full or partial)",
            m.durations.clone(),
        );
        r.register(
            "sync_cpu_seconds",
            "CPU of a controller's syncs (its thread and the children it waited for), by kind",
            m.cpu.clone(),
        );
        r.register(
            "sync_step_seconds",
            "Time in each step of a controller's successful syncs, by kind (\"queued\": from the first change noted to the sync's start)",
            m.steps.clone(),
        );
        r.register(
            "syncs",
            "Syncs by controller, kind and result",
            m.syncs.clone(),
        );
        r.register(
            "sync_last_queued_timestamp_seconds",
            "When a controller last had work queued (a growing gap to the last sync means it is stuck)",
            m.last_queued.clone(),
        );
        r.register(
            "sync_last_timestamp_seconds",
            "When a controller last synced successfully",
            m.last_synced.clone(),
        );
        r.register(
            "network_programming_duration_seconds",
            "From an EndpointSlice's last-change-trigger-time to its Service programmed",
            m.programming.clone(),
        );
        r.register(
            "source_failing",
            "1 while a resource of the source (an API kind, a manifest file) fails; its last good content stays in force",
            m.source_failing.clone(),
        );
        m
    }

    /// A controller that readiness waits for.
    pub fn register(&self, controller: &'static str) {
        self.standing().entry(controller).or_default();
    }

    fn standing(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Standing>> {
        self.standing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every registered controller has finished a full sync.
    pub fn ready(&self) -> bool {
        let s = self.standing();
        !s.is_empty() && s.values().all(|c| c.full_synced)
    }

    /// The controllers with work queued for longer than `limit`.
    pub fn stuck(&self, limit: Duration) -> Vec<&'static str> {
        self.standing()
            .iter()
            .filter(|(_, c)| c.queued_since.is_some_and(|t| t.elapsed() > limit))
            .map(|(n, _)| *n)
            .collect()
    }
}

impl SyncObserver for SyncMetrics {
    fn queued(&self, controller: &'static str) {
        self.standing()
            .entry(controller)
            .or_default()
            .queued_since
            .get_or_insert_with(Instant::now);
        self.last_queued
            .get_or_create(&ControllerLabel {
                controller: controller.into(),
            })
            .set(unix_now());
    }

    fn synced(
        &self,
        controller: &'static str,
        kind: SyncKind,
        _reason: Option<FullReason>,
        duration: Duration,
        result: &Result<SyncDone, SyncError>,
    ) {
        let kind_label = match kind {
            SyncKind::Full => "full",
            SyncKind::Partial => "partial",
        };
        let label = match result {
            Ok(_) => "ok",
            Err(e) => e.metric_label(),
        };
        self.syncs
            .get_or_create(&ResultLabel {
                controller: controller.into(),
                kind: kind_label.into(),
                result: label.into(),
            })
            .inc();
        let Ok(done) = result else { return };
        self.durations
            .get_or_create(&SyncLabel {
                controller: controller.into(),
                kind: kind_label.into(),
            })
            .observe(duration.as_secs_f64());
        self.cpu
            .get_or_create(&SyncLabel {
                controller: controller.into(),
                kind: kind_label.into(),
            })
            .inc_by(done.cpu.as_secs_f64());
        for (step, d) in &done.steps {
            self.steps
                .get_or_create(&StepLabel {
                    controller: controller.into(),
                    kind: kind_label.into(),
                    step: (*step).into(),
                })
                .inc_by(d.as_secs_f64());
        }
        self.last_synced
            .get_or_create(&ControllerLabel {
                controller: controller.into(),
            })
            .set(unix_now());
        for l in &done.programming_latencies {
            self.programming.observe(l.as_secs_f64());
        }
        let mut s = self.standing();
        let c = s.entry(controller).or_default();
        c.queued_since = None;
        c.full_synced |= kind == SyncKind::Full;
    }

    fn overlapped(&self, controller: &'static str) {
        self.overlaps
            .get_or_create(&ControllerLabel {
                controller: controller.into(),
            })
            .inc();
    }

    fn source_health(&self, resource: &str, error: Option<&str>) {
        self.source_failing
            .get_or_create(&ResourceLabel {
                resource: resource.into(),
            })
            .set(i64::from(error.is_some()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_after_every_controller_synced_fully_and_stuck_when_queued_too_long() {
        let mut r = Registry::default();
        let m = SyncMetrics::new(&mut r);
        m.register("services");
        m.register("policies");
        let ok = Ok(SyncDone::default());
        m.synced(
            "services",
            SyncKind::Full,
            None,
            Duration::from_millis(3),
            &ok,
        );
        assert!(!m.ready(), "policies has not synced yet");
        m.synced(
            "policies",
            SyncKind::Partial,
            None,
            Duration::from_millis(3),
            &ok,
        );
        assert!(
            !m.ready(),
            "a partial sync does not make a controller ready"
        );
        m.synced(
            "policies",
            SyncKind::Full,
            None,
            Duration::from_millis(3),
            &ok,
        );
        assert!(m.ready());
        m.queued("services");
        assert!(m.stuck(Duration::from_secs(60)).is_empty());
        assert_eq!(m.stuck(Duration::ZERO), ["services"]);
        let failed = Err(SyncError::NotReady);
        m.synced(
            "services",
            SyncKind::Full,
            None,
            Duration::from_millis(3),
            &failed,
        );
        assert_eq!(
            m.stuck(Duration::ZERO),
            ["services"],
            "a failed sync leaves the work queued"
        );
        m.synced(
            "services",
            SyncKind::Partial,
            None,
            Duration::from_millis(3),
            &ok,
        );
        assert!(m.stuck(Duration::ZERO).is_empty());
    }

    #[test]
    fn each_step_of_the_successful_syncs_adds_up_by_controller_kind_and_step() {
        let mut r = Registry::default();
        let m = SyncMetrics::new(&mut r);
        let done = |ms: u64| SyncDone {
            steps: vec![
                ("prepare", Duration::from_millis(1)),
                ("sets", Duration::from_millis(ms)),
            ],
            ..SyncDone::default()
        };
        for ms in [2, 40] {
            let d = Duration::from_millis(ms + 1);
            m.synced("services", SyncKind::Partial, None, d, &Ok(done(ms)));
        }
        let failed = Err(SyncError::NotReady);
        m.synced("services", SyncKind::Partial, None, Duration::ZERO, &failed);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        let sample = |step: &str| {
            let series = format!(
                "sync_step_seconds_total{{controller=\"services\",kind=\"partial\",step=\"{step}\"}} "
            );
            let line = text.lines().find(|l| l.starts_with(&series));
            line.and_then(|l| l[series.len()..].parse::<f64>().ok())
        };
        let near = |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() < 1e-9);
        assert!(near(sample("sets"), 0.042), "{text}");
        assert!(near(sample("prepare"), 0.002), "{text}");
        assert!(sample("ipvs").is_none(), "no step of that name ran: {text}");
    }

    #[test]
    fn programming_buckets_are_kube_proxys() {
        let b = programming_buckets();
        assert_eq!(b.first(), Some(&0.25));
        assert_eq!(b.last(), Some(&300.0));
        assert_eq!(b.len(), 2 + 59 + 12 + 7);
    }
}
