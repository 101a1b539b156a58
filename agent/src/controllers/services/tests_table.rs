//! The keyed table against the whole recompute: any sequence of Service,
//! EndpointSlice and Node changes applied incrementally gives exactly the
//! state a full recompute of the final cluster gives.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::{desired_with, Options, ServiceDelta, ServiceTable};
use crate::{
    cluster::{KubeObject, Snapshot},
    controllers::fixtures::{
        node, service, slice, snapshot_with_addresses,
        State::{NotServing, Ready},
        NODE,
    },
    desired::{ServiceRef, ServiceState, VirtualService},
};

const SERVICES: usize = 5;
const SLICES: usize = 6;
/// Few addresses, so Services share VIPs and claim each other's keys.
const CLUSTER_IPS: [&str; 3] = ["10.96.0.1", "10.96.0.2", "fd00:96::1"];
const EXTERNAL_IPS: [&str; 2] = ["192.0.2.1", "10.96.0.2"];
/// The second is a node address: local-ips follows whether it is a VIP.
const HOST_ADDRESSES: [&str; 2] = ["192.168.56.10", "192.0.2.1"];

/// One Service's shape, drawn small.
#[derive(Clone, Debug)]
struct SvcSpec {
    cluster_ip: usize,
    port: u16,
    external_ip: Option<usize>,
    node_port: Option<u16>,
    local: bool,
    load_balancer: Option<(usize, bool)>,
    health_port: Option<u16>,
}

#[derive(Clone, Debug)]
struct SliceSpec {
    service: usize,
    endpoints: Vec<(u8, bool, bool)>,
}

#[derive(Clone, Debug)]
enum Op {
    Service(usize, Option<SvcSpec>),
    Slice(usize, Option<SliceSpec>),
    Node(usize),
}

fn svc_spec() -> impl Strategy<Value = SvcSpec> {
    (
        0..CLUSTER_IPS.len(),
        prop::sample::select(vec![80u16, 443]),
        prop::option::of(0..EXTERNAL_IPS.len()),
        prop::option::of(prop::sample::select(vec![30080u16, 30443])),
        any::<bool>(),
        prop::option::of((0..EXTERNAL_IPS.len(), any::<bool>())),
        prop::option::of(prop::sample::select(vec![32000u16, 32001])),
    )
        .prop_map(
            |(cluster_ip, port, external_ip, node_port, local, load_balancer, health_port)| {
                SvcSpec {
                    cluster_ip,
                    port,
                    external_ip,
                    node_port,
                    local,
                    load_balancer,
                    health_port,
                }
            },
        )
}

fn slice_spec() -> impl Strategy<Value = SliceSpec> {
    (
        0..SERVICES,
        prop::collection::vec((0u8..4, any::<bool>(), any::<bool>()), 0..3),
    )
        .prop_map(|(service, endpoints)| SliceSpec { service, endpoints })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SERVICES, prop::option::of(svc_spec())).prop_map(|(i, s)| Op::Service(i, s)),
        4 => (0..SLICES, prop::option::of(slice_spec())).prop_map(|(i, s)| Op::Slice(i, s)),
        1 => (0..3usize).prop_map(Op::Node),
    ]
}

fn svc_name(i: usize) -> String {
    format!("s{i}")
}

fn build_service(i: usize, s: &SvcSpec) -> KubeObject {
    let mut b = service("shop", &svc_name(i))
        .cluster_ip(CLUSTER_IPS[s.cluster_ip])
        .port("", s.port, 8080, "TCP");
    if let Some(np) = s.node_port {
        b = b.node_port(np);
    }
    if let Some(e) = s.external_ip {
        b = b.external_ip(EXTERNAL_IPS[e]);
    }
    if let Some((lb, ranged)) = s.load_balancer {
        b = b.load_balancer(EXTERNAL_IPS[lb]);
        if ranged {
            b = b.source_range("198.51.100.0/24");
        }
    }
    if s.local {
        b = b.external_traffic_local();
        b = b.annotation("kube-router.io/service.hairpin", "");
    }
    if let Some(p) = s.health_port {
        b = b.health_check_node_port(p);
    }
    b.build()
}

fn build_slice(i: usize, s: &SliceSpec) -> KubeObject {
    let mut b = slice("shop", &svc_name(s.service))
        .named(&format!("slice-{i}"))
        .port("", 8080, "TCP");
    for (host, ready, here) in &s.endpoints {
        let addr = format!("10.244.1.{}", host + 2);
        b = b.endpoint(&addr, if *ready { Ready } else { NotServing });
        b = b.on(if *here { NODE } else { "node-b" });
    }
    b.build()
}

/// The cluster the operations describe.
#[derive(Clone, Debug, Default)]
struct Cluster {
    services: BTreeMap<usize, SvcSpec>,
    slices: BTreeMap<usize, SliceSpec>,
    node: usize,
}

impl Cluster {
    fn snapshot(&self) -> Snapshot {
        let mut objects: Vec<KubeObject> = self
            .services
            .iter()
            .map(|(i, s)| build_service(*i, s))
            .chain(self.slices.iter().map(|(i, s)| build_slice(*i, s)))
            .collect();
        let addresses: &[&str] = match self.node {
            0 => &["192.168.56.10"],
            1 => &["192.168.56.11", "fd00:56::10"],
            _ => &[],
        };
        objects.push(node(NODE, addresses));
        snapshot_with_addresses(&HOST_ADDRESSES, objects)
    }
}

/// The kernel as the deltas leave it.
fn apply(state: &mut ServiceState, delta: &ServiceDelta) {
    for (key, vs) in &delta.ipvs {
        state.virtual_services.retain(|v| v.key != *key);
        state.virtual_services.extend(vs.iter().cloned());
    }
    state.virtual_services.sort_by_key(|v| v.key);
    for a in &delta.vips_removed {
        state.vips.remove(a);
    }
    state.vips.extend(&delta.vips_added);
    for d in &delta.sets {
        let set = state.sets.iter_mut().find(|s| s.name == d.set).unwrap();
        for m in &d.del {
            set.members.remove(m);
            state.member_services.remove(m);
        }
        set.members.extend(d.add.iter().copied());
    }
    for (m, svc) in &delta.member_services {
        state.member_services.insert(*m, svc.clone());
    }
    if let Some(plans) = &delta.tables {
        state.iptables = plans.clone();
    }
    if let Some(checks) = &delta.health {
        state.health_checks = checks.clone();
    }
}

fn without_problems(mut s: ServiceState) -> ServiceState {
    s.problems.clear();
    s
}

fn run(start: Cluster, ops: Vec<Op>, opts: Options) -> Result<(), TestCaseError> {
    let mut cluster = start;
    let mut table = ServiceTable::new(opts);
    table.rebuild(&cluster.snapshot());
    let mut kernel = table.assemble();
    for op in ops {
        let mut services = BTreeSet::new();
        let mut slices = BTreeSet::new();
        match op {
            Op::Service(i, s) => {
                services.insert(ServiceRef::new("shop", svc_name(i)));
                match s {
                    Some(s) => cluster.services.insert(i, s),
                    None => cluster.services.remove(&i),
                };
            }
            Op::Slice(i, s) => {
                slices.insert(("shop".to_string(), format!("slice-{i}")));
                match s {
                    Some(s) => cluster.slices.insert(i, s),
                    None => cluster.slices.remove(&i),
                };
            }
            Op::Node(n) => cluster.node = n,
        }
        let snap = cluster.snapshot();
        if table.node_changed(&snap) {
            table.rebuild(&snap);
            kernel = table.assemble();
            continue;
        }
        services.extend(table.slice_services(&slices, &snap));
        let delta = table.update(&services, &snap);
        apply(&mut kernel, &delta);
    }
    let full = desired_with(&cluster.snapshot(), &opts);
    prop_assert_eq!(&table.assemble(), &full);
    // What a full sync writes from the table, in place of the whole state.
    let parts = table.full_state();
    prop_assert_eq!(&parts.vips, &full.vips);
    prop_assert_eq!(&parts.iptables, &full.iptables);
    prop_assert_eq!(&parts.health_checks, &full.health_checks);
    prop_assert_eq!(&parts.problems, &full.problems);
    let (sets, members) = table.sets();
    prop_assert_eq!(&sets, &full.sets);
    prop_assert_eq!(&members, &full.member_services);
    // What `/state` lists, read in place, is what the whole state holds.
    let listed: Vec<&VirtualService> = table.virtual_services().collect();
    prop_assert_eq!(listed, full.virtual_services.iter().collect::<Vec<_>>());
    // The agent reads the refusals' counters only when this says so.
    let refuses = format!("{:?}", full.iptables).contains(super::names::NO_LOCAL_ENDPOINT);
    prop_assert!(
        !refuses || table.has_unserved(),
        "a refusal rule the counters would miss"
    );
    prop_assert_eq!(without_problems(kernel), without_problems(full));
    Ok(())
}

fn cluster() -> impl Strategy<Value = Cluster> {
    (
        prop::collection::btree_map(0..SERVICES, svc_spec(), 0..SERVICES),
        prop::collection::btree_map(0..SLICES, slice_spec(), 0..SLICES),
    )
        .prop_map(|(services, slices)| Cluster {
            services,
            slices,
            node: 0,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn incremental_updates_give_the_full_recompute(
        start in cluster(),
        ops in prop::collection::vec(op(), 1..24),
        bind_all in any::<bool>(),
    ) {
        let opts = Options { nodeport_bindon_all_ip: bind_all, ..Options::default() };
        run(start, ops, opts)?;
    }
}

#[test]
fn a_shared_vip_stays_until_its_last_service_goes() {
    let port = |name: &str, p: u16| {
        service("shop", name)
            .cluster_ip("10.96.0.1")
            .port("", p, 8080, "TCP")
            .build()
    };
    let snap = |objects: Vec<KubeObject>| {
        let mut objects = objects;
        objects.push(node(NODE, &["192.168.56.10"]));
        snapshot_with_addresses(&HOST_ADDRESSES, objects)
    };
    let mut table = ServiceTable::new(Options::default());
    table.rebuild(&snap(vec![port("a", 80), port("b", 443)]));
    let a = BTreeSet::from([ServiceRef::new("shop", "a")]);
    let delta = table.update(&a, &snap(vec![port("b", 443)]));
    assert!(delta.vips_removed.is_empty(), "b still holds it: {delta:?}");
    let removed: Vec<String> = delta
        .sets
        .iter()
        .flat_map(|d| d.del.iter().map(|m| format!("{} {m}", d.set)))
        .collect();
    assert_eq!(removed, ["ipwarden-svip-prt 10.96.0.1,tcp:80"]);
    let b = BTreeSet::from([ServiceRef::new("shop", "b")]);
    let delta = table.update(&b, &snap(vec![]));
    assert_eq!(
        delta.vips_removed,
        BTreeSet::from(["10.96.0.1".parse().unwrap()])
    );
    assert_eq!(delta.ipvs.len(), 1, "only b's key is read back");
}
