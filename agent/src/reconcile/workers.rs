//! The two controllers as driver workers: each builds its snapshot from
//! the source on its own thread and syncs through its own dataplane.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant, SystemTime},
};

use super::{
    board::{Board, BpfStatus},
    dataplane::{Dataplane, RealDataplane},
    driver::{SyncDone, SyncError, Worker},
    first_write::FirstWrite,
    policies::PolicySync,
    schedule::{FullReason, SyncKind},
    services::{ServiceChanges, ServiceSync, Stopwatch},
};
use crate::{
    cluster::{source::Kind, HostInfo, Snapshot},
    controllers::policies::incremental::PolicyChanges,
    desired::ServiceRef,
};

/// The annotation kube-proxy measures programming latency from.
const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

pub struct ServiceWorker {
    pub sync: ServiceSync<RealDataplane>,
    pub node_name: String,
    pub board: Board,
    /// Opened when the first sync is over (the policy controller's first
    /// chain write waits for it); `None` without a policy controller.
    pub first_write: Option<FirstWrite>,
}

impl Worker for ServiceWorker {
    type Changes = ServiceChanges;

    fn name(&self) -> &'static str {
        "services"
    }

    fn concerns(&self, kind: Kind) -> bool {
        matches!(kind, Kind::Service | Kind::EndpointSlice | Kind::Node)
    }

    fn note(c: &mut ServiceChanges, kind: Kind, namespace: Option<String>, name: String) {
        c.first_noted.get_or_insert_with(Instant::now);
        let ns = namespace.unwrap_or_else(|| "default".into());
        match kind {
            Kind::Service => {
                c.services.insert(ServiceRef::new(ns, name));
            }
            Kind::EndpointSlice => {
                c.slices.insert((ns, name));
            }
            Kind::Node => c.node = true,
            _ => {}
        }
    }

    fn merge(into: &mut ServiceChanges, older: ServiceChanges) {
        into.services.extend(older.services);
        into.slices.extend(older.slices);
        into.node |= older.node;
        into.first_noted = [into.first_noted, older.first_noted]
            .into_iter()
            .flatten()
            .min();
    }

    fn sync(
        &mut self,
        kind: SyncKind,
        reason: Option<FullReason>,
        changes: &ServiceChanges,
        source: &dyn crate::cluster::source::Source,
    ) -> Result<SyncDone, SyncError> {
        let done = self.sync_once(kind, reason, changes, source);
        // Written or failed: either way the policies need not wait longer.
        if !matches!(done, Err(SyncError::NotReady)) {
            if let Some(first) = self.first_write.take() {
                first.open();
            }
        }
        done
    }
}

impl ServiceWorker {
    fn sync_once(
        &mut self,
        kind: SyncKind,
        reason: Option<FullReason>,
        changes: &ServiceChanges,
        source: &dyn crate::cluster::source::Source,
    ) -> Result<SyncDone, SyncError> {
        let mut steps = Stopwatch::start();
        // From the dispatcher noting the first change to this sync's start
        // (debounce, a sync under way, the hand-over to this thread).
        if let Some(noted) = changes.first_noted {
            steps.extend(&[("queued", noted.elapsed())]);
        }
        let host = HostInfo {
            node_name: self.node_name.clone(),
            local_addresses: self.sync.dataplane().local_addresses()?,
        };
        steps.lap("addresses");
        let snapshot = source.snapshot(&host).ok_or(SyncError::NotReady)?;
        steps.lap("snapshot");
        self.sync.set_full_reason(reason);
        let report = self.sync.sync(kind, &snapshot, changes)?;
        steps.extend(self.sync.last_steps());
        for p in &report.problems {
            tracing::warn!("{p}");
        }
        let bpf = self.sync.dataplane().bpf().map(|rt| BpfStatus {
            mode: format!("{:?}", rt.mode()).to_lowercase(),
            interfaces: rt.attached().clone(),
        });
        let state = Some(self.sync.view());
        self.board.update(|b| {
            b.services = state;
            b.bpf = bpf;
            count_objects(&snapshot, &mut b.objects);
        });
        let programming_latencies = latencies(&snapshot, &changes.slices);
        steps.lap("board");
        Ok(SyncDone {
            noop: !report.ipvs.changed()
                && report.addresses.added.is_empty()
                && report.addresses.removed.is_empty()
                && report.chains_written.is_empty()
                && !report.sets.as_ref().is_some_and(|s| s.changed()),
            summary: format!("{}; steps: {}", report.summary(), steps.laps()),
            programming_latencies,
            counts: report.counts(),
            cpu: Duration::ZERO,
            minor_faults: 0,
            steps: steps.into_laps(),
        })
    }
}

/// Objects of each kind in `snapshot`.
fn count_objects(snapshot: &Snapshot, into: &mut std::collections::BTreeMap<String, usize>) {
    for (kind, n) in [
        ("Service", snapshot.services.len()),
        ("EndpointSlice", snapshot.endpoint_slices.len()),
        ("Pod", snapshot.pods.len()),
        ("Namespace", snapshot.namespaces.len()),
        ("NetworkPolicy", snapshot.network_policies.len()),
        (
            "ClusterNetworkPolicy",
            snapshot.cluster_network_policies.len(),
        ),
        ("Node", usize::from(snapshot.node.is_some())),
    ] {
        into.insert(kind.to_string(), n);
    }
}

/// From each changed slice's trigger time to now (slices found by key).
fn latencies(snapshot: &Snapshot, slices: &BTreeSet<(String, String)>) -> Vec<Duration> {
    let now = SystemTime::now();
    slices
        .iter()
        .filter_map(|(ns, name)| snapshot.endpoint_slice(ns, name))
        .filter_map(|s| {
            s.metadata
                .annotations
                .get(TRIGGER_TIME)?
                .parse::<jiff::Timestamp>()
                .ok()
        })
        .filter_map(|t| now.duration_since(SystemTime::from(t)).ok())
        .collect()
}

pub struct PolicyWorker {
    pub sync: PolicySync<RealDataplane>,
    pub node_name: String,
    pub board: Board,
}

impl Worker for PolicyWorker {
    /// The changed objects: a partial sync looks only at them.
    type Changes = PolicyChanges;

    fn name(&self) -> &'static str {
        "policies"
    }

    fn concerns(&self, kind: Kind) -> bool {
        matches!(
            kind,
            Kind::Pod | Kind::Namespace | Kind::NetworkPolicy | Kind::ClusterNetworkPolicy
        )
    }

    fn note(c: &mut PolicyChanges, kind: Kind, namespace: Option<String>, name: String) {
        let key = (namespace.unwrap_or_default(), name);
        match kind {
            Kind::Pod => {
                c.pods.insert(key);
            }
            Kind::Namespace => {
                c.namespaces.insert(key.1);
            }
            Kind::NetworkPolicy => {
                c.policies.insert(key);
            }
            Kind::ClusterNetworkPolicy => {
                c.cluster_policies.insert(key.1);
            }
            _ => {}
        }
    }

    fn merge(into: &mut PolicyChanges, older: PolicyChanges) {
        into.merge(older);
    }

    fn sync(
        &mut self,
        kind: SyncKind,
        reason: Option<FullReason>,
        changes: &PolicyChanges,
        source: &dyn crate::cluster::source::Source,
    ) -> Result<SyncDone, SyncError> {
        let host = HostInfo {
            node_name: self.node_name.clone(),
            local_addresses: Vec::new(),
        };
        let snapshot = source.snapshot(&host).ok_or(SyncError::NotReady)?;
        self.sync.set_full_reason(reason);
        let (state, report) = self.sync.sync(kind, &snapshot, changes)?;
        for p in &state.problems {
            tracing::warn!("{p}");
        }
        let problems = state.problems.len();
        let state = state.into_summary();
        self.board.update(|b| {
            b.policies = Some(std::sync::Arc::new(state));
            count_objects(&snapshot, &mut b.objects);
        });
        let sets_changed = report.sets.as_ref().is_some_and(|s| s.changed());
        Ok(SyncDone {
            noop: !sets_changed
                && report.chains_written.is_empty()
                && report.chains_deleted.is_empty(),
            summary: report.summary().trim_start_matches("; ").to_string(),
            programming_latencies: Vec::new(),
            counts: super::driver::SyncCounts {
                virtual_services: None,
                problems,
                ipvs_changes: 0,
                set_member_changes: report.sets.as_ref().map_or(0, |s| {
                    (s.executed.members_added + s.executed.members_deleted) as u64
                }),
            },
            cpu: Duration::ZERO,
            minor_faults: 0,
            steps: Vec::new(),
        })
    }
}
