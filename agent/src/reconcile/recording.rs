//! A recording fake of the dataplane: the order of a pass and what a
//! partial sync touches, checked without root.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use super::{
    dataplane::{Dataplane, IpvsSelection},
    ipvs_settings::IpvsSettings,
    schedule::SyncKind,
    services::{ProxyOptions, ServiceChanges, ServiceSync},
    ReconcileError,
};
use crate::{
    cluster::{manifests, HostInfo, Snapshot},
    controllers::services,
    desired::{
        ChainDelta, Family, HealthCheck, MemberServices, Problem, SetDelta, SetSpec, Table,
        TablePlan, VirtualService, VsKey,
    },
    kernel::{
        iptables::{partial_changes, Changes},
        ipvs_sync::IpvsReport,
        link::AddressReport,
    },
    store::{ApplyReport, SourcePhase},
};

/// One call, as the fake saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Sets(&'static str),
    /// A partial sets apply: the names written and the names removed.
    ChangedSets(&'static str, Vec<String>, Vec<String>),
    /// The keys written, and the keys read back (None: the whole table).
    Ipvs {
        desired: BTreeSet<VsKey>,
        selection: Option<BTreeSet<VsKey>>,
    },
    /// A member-level sets apply.
    Members(&'static str, Vec<SetDelta>),
    Addresses(BTreeSet<IpAddr>),
    /// A partial address change: (added, deleted).
    AddressChanges(BTreeSet<IpAddr>, BTreeSet<IpAddr>),
    Table(Family, Table),
    /// A partial chain write: (family, chains written, chains deleted).
    Chains(Family, Vec<String>, Vec<String>),
    /// The health-check ports served.
    HealthChecks(Vec<u16>),
    /// The sources the tc program must not mark, and when.
    Sources(BTreeSet<IpAddr>, SourcePhase),
}

#[derive(Clone, Default)]
pub struct Recording {
    pub calls: Arc<Mutex<Vec<Call>>>,
    /// A family whose table writes fail (recorded all the same).
    pub failing: Option<Family>,
}

impl Recording {
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    fn push(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }
}

impl Dataplane for Recording {
    fn apply_sets(
        &mut self,
        owner: &'static str,
        _: &[SetSpec],
        _: &MemberServices,
    ) -> Result<ApplyReport, ReconcileError> {
        self.push(Call::Sets(owner));
        Ok(ApplyReport::nothing(owner))
    }

    fn reapply_sets(&mut self, owner: &'static str) -> Result<ApplyReport, ReconcileError> {
        self.push(Call::Sets(owner));
        Ok(ApplyReport::nothing(owner))
    }

    fn apply_changed_sets(
        &mut self,
        owner: &'static str,
        changed: &[SetSpec],
        removed: &[String],
    ) -> Result<ApplyReport, ReconcileError> {
        self.push(Call::ChangedSets(
            owner,
            changed.iter().map(|s| s.name.clone()).collect(),
            removed.to_vec(),
        ));
        Ok(ApplyReport::nothing(owner))
    }

    fn apply_set_members(
        &mut self,
        owner: &'static str,
        deltas: &[SetDelta],
        _: &MemberServices,
    ) -> Result<ApplyReport, ReconcileError> {
        self.push(Call::Members(owner, deltas.to_vec()));
        Ok(ApplyReport::nothing(owner))
    }

    fn sync_ipvs(
        &mut self,
        desired: &[&VirtualService],
        selection: IpvsSelection<'_>,
        _: &BTreeSet<IpAddr>,
        _: &[IpAddr],
    ) -> Result<IpvsReport, ReconcileError> {
        self.push(Call::Ipvs {
            desired: desired.iter().map(|v| v.key).collect(),
            selection: match selection {
                IpvsSelection::All => None,
                IpvsSelection::Keys(k) => Some(k.clone()),
            },
        });
        Ok(IpvsReport::default())
    }

    fn sync_addresses(&mut self, vips: &BTreeSet<IpAddr>) -> Result<AddressReport, ReconcileError> {
        self.push(Call::Addresses(vips.clone()));
        Ok(AddressReport::default())
    }

    fn change_addresses(
        &mut self,
        add: &BTreeSet<IpAddr>,
        del: &BTreeSet<IpAddr>,
    ) -> Result<AddressReport, ReconcileError> {
        self.push(Call::AddressChanges(add.clone(), del.clone()));
        Ok(AddressReport::default())
    }

    fn apply_table(&mut self, plan: &TablePlan) -> Result<Changes, ReconcileError> {
        self.push(Call::Table(plan.family, plan.table));
        if self.failing == Some(plan.family) {
            return Err(crate::kernel::iptables::IptablesError::Failed {
                cmd: "iptables-restore",
                table: plan.table,
                stderr: "refused by the test".into(),
                failed_line: None,
            }
            .into());
        }
        Ok(Changes::default())
    }

    fn restrict_sources(&mut self, sources: &BTreeSet<IpAddr>, phase: SourcePhase) {
        self.push(Call::Sources(sources.clone(), phase));
    }

    fn apply_chain_delta(&mut self, delta: &ChainDelta) -> Result<Changes, ReconcileError> {
        let changes = partial_changes(delta);
        self.push(Call::Chains(
            delta.family,
            changes.chains_written.clone(),
            changes.chains_deleted.clone(),
        ));
        Ok(changes)
    }

    fn local_addresses(&self) -> Result<Vec<IpAddr>, ReconcileError> {
        Ok(Vec::new())
    }

    fn serve_health_checks(&mut self, checks: &[HealthCheck]) -> Vec<Problem> {
        self.push(Call::HealthChecks(checks.iter().map(|c| c.port).collect()));
        Vec::new()
    }
}

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n\
    status: {addresses: [{type: InternalIP, address: 10.0.1.1}]}\n";

fn service(name: &str, ip: &str, endpoint: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec: {{clusterIP: {ip}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: shop, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\n\
         endpoints: [{{addresses: [{endpoint}], conditions: {{ready: true}}}}]\n"
    )
}

fn snapshot(yaml: &str) -> Snapshot {
    let mut loaded = manifests::Loaded::default();
    manifests::parse_text(Path::new("test.yaml"), yaml, &mut loaded);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let host = HostInfo {
        node_name: "node-a".into(),
        local_addresses: vec!["10.0.1.1".parse().unwrap()],
    };
    Snapshot::from_objects(loaded.objects, host)
}

fn key(ip: &str) -> VsKey {
    VsKey {
        addr: ip.parse().unwrap(),
        proto: crate::desired::Protocol::Tcp,
        port: 80,
    }
}

fn sync() -> (ServiceSync<Recording>, Recording) {
    let rec = Recording::default();
    let opts = ProxyOptions {
        node_port_range: (30000, 32767),
        ipvs: IpvsSettings::sysctls_only(crate::kernel::sysctl::DEFAULT_DIR),
        services: services::Options::default(),
    };
    (ServiceSync::new(rec.clone(), opts), rec)
}

#[test]
fn a_pass_writes_sets_then_ipvs_then_addresses_then_chains() {
    let (mut s, rec) = sync();
    let snap = snapshot(&format!(
        "{NODE}{}",
        service("a", "10.96.0.1", "10.244.1.2")
    ));
    s.sync(SyncKind::Full, &snap, &ServiceChanges::default())
        .unwrap();
    let calls = rec.take();
    let kinds: Vec<&str> = calls
        .iter()
        .map(|c| match c {
            Call::Sets(_) | Call::ChangedSets(..) | Call::Members(..) => "sets",
            Call::Ipvs { .. } => "ipvs",
            Call::Addresses(_) | Call::AddressChanges(..) => "addresses",
            Call::Table(..) | Call::Chains(..) => "table",
            Call::HealthChecks(_) => "health_checks",
            Call::Sources(..) => "sources",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "sets",
            "ipvs",
            "addresses",
            "table",
            "table",
            "table",
            "table",
            "health_checks"
        ]
    );
    assert!(
        matches!(
            &calls[1],
            Call::Ipvs {
                selection: None,
                ..
            }
        ),
        "a full sync reads the whole table"
    );
}

#[test]
fn a_partial_sync_reads_and_writes_only_the_changed_services_keys() {
    let (mut s, rec) = sync();
    let before = format!(
        "{NODE}{}{}",
        service("a", "10.96.0.1", "10.244.1.2"),
        service("b", "10.96.0.2", "10.244.1.3")
    );
    s.sync(
        SyncKind::Full,
        &snapshot(&before),
        &ServiceChanges::default(),
    )
    .unwrap();
    rec.take();
    // b's endpoint moves: only its slice changed.
    let after = format!(
        "{NODE}{}{}",
        service("a", "10.96.0.1", "10.244.1.2"),
        service("b", "10.96.0.2", "10.244.1.9")
    );
    let changes = ServiceChanges {
        slices: BTreeSet::from([("shop".to_string(), "b-1".to_string())]),
        ..ServiceChanges::default()
    };
    let report = s
        .sync(SyncKind::Partial, &snapshot(&after), &changes)
        .unwrap();
    assert_eq!(
        report.virtual_services, 2,
        "the state still holds every Service"
    );
    assert_eq!(
        rec.take(),
        [
            Call::Ipvs {
                desired: BTreeSet::from([key("10.96.0.2")]),
                selection: Some(BTreeSet::from([key("10.96.0.2")])),
            },
            Call::AddressChanges(BTreeSet::new(), BTreeSet::new()),
        ],
        "no set member and no rule moved: only b's IPVS service is read and written"
    );
}

#[test]
fn a_partial_sync_writes_only_the_members_and_vips_that_moved() {
    let (mut s, rec) = sync();
    let a = service("a", "10.96.0.1", "10.244.1.2");
    s.sync(
        SyncKind::Full,
        &snapshot(&format!("{NODE}{a}")),
        &ServiceChanges::default(),
    )
    .unwrap();
    rec.take();
    let changes = ServiceChanges {
        services: BTreeSet::from([crate::desired::ServiceRef::new("shop", "b")]),
        slices: BTreeSet::from([("shop".to_string(), "b-1".to_string())]),
        ..ServiceChanges::default()
    };
    let b = service("b", "10.96.0.2", "10.244.1.3");
    s.sync(
        SyncKind::Partial,
        &snapshot(&format!("{NODE}{a}{b}")),
        &changes,
    )
    .unwrap();
    let calls = rec.take();
    let Call::Members(_, deltas) = &calls[0] else {
        panic!("{calls:?}")
    };
    let added: BTreeSet<String> = deltas
        .iter()
        .flat_map(|d| d.add.iter().map(|m| format!("{} {m}", d.set)))
        .collect();
    assert_eq!(
        added,
        BTreeSet::from([
            "ipwarden-svip 10.96.0.2".to_string(),
            "ipwarden-svip-prt 10.96.0.2,tcp:80".to_string()
        ])
    );
    assert!(deltas.iter().all(|d| d.del.is_empty()), "{deltas:?}");
    assert_eq!(
        calls[2],
        Call::AddressChanges(
            BTreeSet::from(["10.96.0.2".parse().unwrap()]),
            BTreeSet::new()
        )
    );
    assert_eq!(calls.len(), 3, "no chain written: {calls:?}");
}

#[test]
fn a_deleted_service_is_removed_by_key_and_a_node_change_makes_the_sync_full() {
    let (mut s, rec) = sync();
    let both = format!(
        "{NODE}{}{}",
        service("a", "10.96.0.1", "10.244.1.2"),
        service("b", "10.96.0.2", "10.244.1.3")
    );
    s.sync(SyncKind::Full, &snapshot(&both), &ServiceChanges::default())
        .unwrap();
    rec.take();
    let only_a = format!("{NODE}{}", service("a", "10.96.0.1", "10.244.1.2"));
    let changes = ServiceChanges {
        services: BTreeSet::from([crate::desired::ServiceRef::new("shop", "b")]),
        slices: BTreeSet::from([("shop".to_string(), "b-1".to_string())]),
        ..ServiceChanges::default()
    };
    s.sync(SyncKind::Partial, &snapshot(&only_a), &changes)
        .unwrap();
    assert_eq!(
        rec.take()[1],
        Call::Ipvs {
            desired: BTreeSet::new(),
            selection: Some(BTreeSet::from([key("10.96.0.2")])),
        },
        "b's key is read back and, being gone from the desired state, deleted"
    );
    let moved = only_a.replace("10.0.1.1", "10.0.1.5");
    let node = ServiceChanges {
        node: true,
        ..ServiceChanges::default()
    };
    s.sync(SyncKind::Partial, &snapshot(&moved), &node).unwrap();
    assert!(
        matches!(
            rec.take()[1],
            Call::Ipvs {
                selection: None,
                ..
            }
        ),
        "NodePorts moved: full"
    );
}

fn policy_cluster(client_label: &str) -> Snapshot {
    snapshot(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: x, labels: {{app: db}}}}\n\
         spec: {{nodeName: node-a, containers: [{{name: c}}]}}\n\
         status: {{phase: Running, podIP: 10.244.1.2}}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: b, namespace: x, labels: {{role: {client_label}}}}}\n\
         spec: {{nodeName: node-b, containers: [{{name: c}}]}}\n\
         status: {{phase: Running, podIP: 10.244.2.2}}\n\
         ---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: db, namespace: x}}\n\
         spec: {{podSelector: {{matchLabels: {{app: db}}}}, ingress: [{{from: [{{podSelector: {{matchLabels: {{role: client}}}}}}]}}]}}\n"
    ))
}

#[test]
fn a_partial_policy_sync_writes_only_the_changed_sets_and_no_chain() {
    use super::{policies::PolicySync, POLICIES_OWNER};
    use crate::controllers::policies::incremental::PolicyChanges;
    let rec = Recording::default();
    let mut p = PolicySync::new(
        rec.clone(),
        crate::controllers::policies::Options::default(),
    );
    p.sync(
        SyncKind::Full,
        &policy_cluster("client"),
        &PolicyChanges::default(),
    )
    .unwrap();
    let full = rec.take();
    assert!(full.contains(&Call::Sets(POLICIES_OWNER)), "{full:?}");
    assert_eq!(
        full.iter().filter(|c| matches!(c, Call::Table(..))).count(),
        2
    );
    // x/b stops matching role=client: one member leaves one set.
    let changed = PolicyChanges {
        pods: [("x".to_string(), "b".to_string())].into(),
        ..PolicyChanges::default()
    };
    p.sync(SyncKind::Partial, &policy_cluster("other"), &changed)
        .unwrap();
    let calls = rec.take();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let Call::Members(_, deltas) = &calls[0] else {
        panic!("{calls:?}")
    };
    assert_eq!(deltas.len(), 1, "only the peer set changed: {deltas:?}");
    assert_eq!((deltas[0].add.len(), deltas[0].del.len()), (0, 1));
    // Nothing changed: nothing read, nothing written.
    p.sync(SyncKind::Partial, &policy_cluster("other"), &changed)
        .unwrap();
    assert_eq!(rec.take(), []);
}

/// Pod x/a on this node, labelled `app: {app}`, and a policy that
/// restricts the egress of `app: db` pods.
fn egress_cluster(app: &str) -> Snapshot {
    snapshot(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: x, labels: {{app: {app}}}}}\n\
         spec: {{nodeName: node-a, containers: [{{name: c}}]}}\n\
         status: {{phase: Running, podIP: 10.244.1.2, podIPs: [{{ip: 10.244.1.2}}, {{ip: 'fd00:244::2'}}]}}\n\
         ---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: db-out, namespace: x}}\n\
         spec: {{podSelector: {{matchLabels: {{app: db}}}}, policyTypes: [Egress], egress: []}}\n"
    ))
}

/// The calls' kinds: "before", "after" (the restricted sources' two
/// phases, with how many sources) and "chains".
fn source_order(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Sources(s, SourcePhase::BeforeChains) => Some(format!("before {}", s.len())),
            Call::Sources(s, SourcePhase::AfterChains) => Some(format!("after {}", s.len())),
            Call::Table(..) | Call::Chains(..) => Some("chains".into()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_pod_is_restricted_before_its_chain_and_released_after_it() {
    use super::policies::PolicySync;
    use crate::controllers::policies::incremental::PolicyChanges;
    let rec = Recording::default();
    let opts = crate::controllers::policies::Options::default();
    let mut p = PolicySync::new(rec.clone(), opts);
    p.sync(SyncKind::Full, &egress_cluster("web"), &Default::default())
        .unwrap();
    assert_eq!(
        source_order(&rec.take()),
        ["before 0", "chains", "chains", "after 0"]
    );
    let changed = PolicyChanges {
        pods: [("x".to_string(), "a".to_string())].into(),
        ..PolicyChanges::default()
    };
    // x/a becomes egress-isolated: both its addresses are published
    // before the chains that isolate it are written.
    p.sync(SyncKind::Partial, &egress_cluster("db"), &changed)
        .unwrap();
    let calls = rec.take();
    assert_eq!(
        source_order(&calls),
        ["before 2", "chains", "chains", "after 2"],
        "{calls:?}"
    );
    let Some(Call::Sources(sources, _)) = calls.first() else {
        panic!("{calls:?}")
    };
    let want: BTreeSet<IpAddr> = ["10.244.1.2", "fd00:244::2"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(sources, &want);
    // Released: the sources leave only after the chains are gone.
    p.sync(SyncKind::Partial, &egress_cluster("web"), &changed)
        .unwrap();
    assert_eq!(
        source_order(&rec.take()),
        ["before 0", "chains", "chains", "after 0"]
    );
    // A full sync of the same cluster publishes them around its chains too.
    p.sync(SyncKind::Full, &egress_cluster("db"), &Default::default())
        .unwrap();
    assert_eq!(
        source_order(&rec.take()),
        ["before 2", "chains", "chains", "after 2"]
    );
}

/// A family whose chains fail fails the sync closed: the other family is
/// still written, the sources stay restricted (no after phase), and the
/// next full sync writes both again.
#[test]
fn a_failed_family_fails_the_sync_after_the_other_is_written() {
    use super::policies::PolicySync;
    for family in [Family::V4, Family::V6] {
        let rec = Recording {
            failing: Some(family),
            ..Recording::default()
        };
        let opts = crate::controllers::policies::Options::default();
        let mut p = PolicySync::new(rec.clone(), opts);
        let err = p
            .sync(SyncKind::Full, &egress_cluster("db"), &Default::default())
            .unwrap_err();
        assert!(err.to_string().contains("refused by the test"), "{err}");
        let calls = rec.take();
        assert_eq!(
            source_order(&calls),
            ["before 2", "chains", "chains"],
            "{family:?}: {calls:?}"
        );
        let tables: Vec<&Call> = calls
            .iter()
            .filter(|c| matches!(c, Call::Table(..)))
            .collect();
        assert_eq!(
            tables,
            [
                &Call::Table(Family::V4, Table::Filter),
                &Call::Table(Family::V6, Table::Filter)
            ]
        );
        // Nothing applied is kept: the next sync, partial or not, is full.
        p.sync(
            SyncKind::Partial,
            &egress_cluster("db"),
            &Default::default(),
        )
        .unwrap_err();
        let again = source_order(&rec.take());
        assert_eq!(again, ["before 2", "chains", "chains"], "{family:?}");
    }
}

/// With a ClusterNetworkPolicy present, a partial policy sync still
/// writes only what moved: a pod label change is members only, the policy
/// deleted is its chain deleted and the pod chain that jumped to it
/// rewritten, never a whole table or the whole set state.
#[test]
fn a_partial_policy_sync_with_a_cluster_policy_writes_only_what_moved() {
    use super::{policies::PolicySync, POLICIES_OWNER};
    use crate::controllers::policies::incremental::PolicyChanges;
    let admin = "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
        metadata: {name: deny-y}\nspec: {tier: Admin, priority: 1, subject: {namespaces: {}},\n\
        ingress: [{action: Deny, from: [{namespaces: {matchLabels: {ns: y}}}]}]}\n";
    let with_admin = |client: &str| {
        let mut loaded = crate::cluster::manifests::Loaded::default();
        crate::cluster::manifests::parse_text(std::path::Path::new("cnp.yaml"), admin, &mut loaded);
        let Some(crate::cluster::KubeObject::ClusterNetworkPolicy(p)) = loaded.objects.pop() else {
            panic!("{:?}", loaded.problems)
        };
        policy_cluster(client).with_cluster_network_policies(vec![std::sync::Arc::new(*p)])
    };
    let rec = Recording::default();
    let mut p = PolicySync::new(
        rec.clone(),
        crate::controllers::policies::Options::default(),
    );
    p.sync(
        SyncKind::Full,
        &with_admin("client"),
        &PolicyChanges::default(),
    )
    .unwrap();
    rec.take();
    let whole = |c: &Call| matches!(c, Call::Table(..) | Call::Sets(_));
    let changed = PolicyChanges {
        pods: [("x".to_string(), "b".to_string())].into(),
        ..PolicyChanges::default()
    };
    p.sync(SyncKind::Partial, &with_admin("other"), &changed)
        .unwrap();
    let calls = rec.take();
    assert!(!calls.iter().any(whole), "{calls:?}");
    assert!(
        matches!(calls.as_slice(), [Call::Members(POLICIES_OWNER, d)] if d.len() == 1),
        "{calls:?}"
    );
    // The policy deleted: its chain goes, the pod's chain is rewritten.
    let gone = PolicyChanges {
        cluster_policies: ["deny-y".to_string()].into(),
        ..PolicyChanges::default()
    };
    p.sync(SyncKind::Partial, &policy_cluster("other"), &gone)
        .unwrap();
    let calls = rec.take();
    assert!(!calls.iter().any(whole), "{calls:?}");
    let chains: Vec<_> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Chains(Family::V4, written, deleted) => Some((written, deleted)),
            _ => None,
        })
        .collect();
    assert_eq!(chains.len(), 1, "{calls:?}");
    let (written, deleted) = chains[0];
    assert_eq!(written.len(), 1, "{calls:?}");
    assert!(written[0].starts_with("IPW-POD-FW-"), "{calls:?}");
    assert_eq!(deleted.len(), 1, "{calls:?}");
    assert!(deleted[0].starts_with("IPW-CNP-"), "{calls:?}");
}

#[test]
fn a_full_policy_sync_finds_the_changes_no_one_named() {
    use super::policies::PolicySync;
    use crate::controllers::policies::{desired, incremental::PolicyChanges, Options};
    let rec = Recording::default();
    let mut p = PolicySync::new(rec.clone(), Options::default());
    p.sync(
        SyncKind::Full,
        &policy_cluster("client"),
        &PolicyChanges::default(),
    )
    .unwrap();
    // x/b relabelled while the watch was down (a relist names nothing).
    let other = policy_cluster("other");
    let (state, _) = p
        .sync(SyncKind::Full, &other, &PolicyChanges::default())
        .unwrap();
    let whole = desired(&other, &Options::default());
    assert_eq!(p.applied_state(), Some(whole.clone()));
    // It returns the summary (its sets and chains are not kept).
    assert_eq!(state.into_summary(), whole.into_summary());
    rec.take();
    // The index holds x/b as relabelled: setting it again moves nothing.
    let b = PolicyChanges {
        pods: [("x".to_string(), "b".to_string())].into(),
        ..PolicyChanges::default()
    };
    p.sync(SyncKind::Partial, &other, &b).unwrap();
    assert_eq!(rec.take(), []);
}

#[test]
fn a_kept_full_sync_hands_over_what_the_partial_syncs_since_changed() {
    use super::schedule::FullReason;
    let (mut s, rec) = sync();
    let two = format!(
        "{NODE}{}{}",
        service("a", "10.96.0.1", "10.244.1.2"),
        service("b", "10.96.0.2", "10.244.1.3")
    );
    let no_change = ServiceChanges::default();
    // The keys handed to IPVS, checked against the VIPs handed over (the
    // full state a kept sync reuses must follow the partial syncs too).
    let periodic_keys = |s: &mut ServiceSync<Recording>, snap: &Snapshot| {
        s.set_full_reason(Some(FullReason::Period));
        s.sync(SyncKind::Full, snap, &no_change).unwrap();
        let calls = rec.take();
        let keys = calls
            .iter()
            .find_map(|c| match c {
                Call::Ipvs { desired, .. } => Some(desired.clone()),
                _ => None,
            })
            .unwrap();
        let vips = calls
            .iter()
            .find_map(|c| match c {
                Call::Addresses(vips) => Some(vips.clone()),
                _ => None,
            })
            .unwrap();
        let key_vips: BTreeSet<IpAddr> = keys.iter().map(|k| k.addr).collect();
        assert_eq!(vips, key_vips, "{calls:?}");
        keys
    };
    s.set_full_reason(Some(FullReason::Start));
    s.sync(SyncKind::Full, &snapshot(&two), &no_change).unwrap();
    rec.take();
    let both = BTreeSet::from([key("10.96.0.1"), key("10.96.0.2")]);
    assert_eq!(periodic_keys(&mut s, &snapshot(&two)), both);
    // c arrives by a partial sync; the next periodic full sync keeps the
    // table, and must not hand over the state assembled before c.
    let three = format!("{two}{}", service("c", "10.96.0.3", "10.244.1.4"));
    let changes = ServiceChanges {
        services: BTreeSet::from([crate::desired::ServiceRef {
            namespace: "shop".into(),
            name: "c".into(),
        }]),
        slices: BTreeSet::from([("shop".to_string(), "c-1".to_string())]),
        ..ServiceChanges::default()
    };
    s.set_full_reason(None);
    s.sync(SyncKind::Partial, &snapshot(&three), &changes)
        .unwrap();
    rec.take();
    let mut all = both;
    all.insert(key("10.96.0.3"));
    assert_eq!(periodic_keys(&mut s, &snapshot(&three)), all);
    assert_eq!(periodic_keys(&mut s, &snapshot(&three)), all);
}
