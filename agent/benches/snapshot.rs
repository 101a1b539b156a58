//! What the agent's loop pays for each snapshot of a big cluster: 10k
//! Services with a slice each, 5k Pods, 100 namespaces and 500
//! NetworkPolicies, shared (`Arc`). Two ways: the API server source's
//! ordered stores (`Stores::snapshot`, the lists shared), and
//! `Snapshot::from_shared` handed them in hashed order (pointer copies, a
//! sort and the slice index, as every snapshot cost before the stores kept
//! their order); and what keeping the order costs one event (one slice
//! updated in the 10k store), alone and while a snapshot holds the lists
//! (the store copies them first). No kernel, no root:
//!
//! ```text
//! cargo bench -p ipwarden --bench snapshot
//! ```
//!
//! `IPWARDEN_BENCH_RUNS` (default 21) tunes it. Prints the median and the
//! best run.

mod common;

use std::{sync::Arc, time::Instant};

use common::median;
use ipwarden::cluster::{
    compact::{Keep, Stored},
    Grouped, HostInfo, Ordered, Snapshot, Stores,
};
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
    networking::v1::NetworkPolicy,
};
use kube::runtime::watcher;
use serde_json::{json, Value};

/// Decoded and kept as the agent's watchers keep them.
fn objects<D: serde::de::DeserializeOwned + Keep>(
    values: impl Iterator<Item = Value>,
) -> Vec<Arc<D::Kept>> {
    values
        .map(|v| Arc::new(serde_json::from_value::<D>(v).unwrap().keep()))
        .collect()
}

fn fill<K: Stored + Grouped>(store: &Ordered<K>, objects: &[Arc<K>]) {
    store.apply(watcher::Event::Init);
    for o in objects {
        store.apply(watcher::Event::InitApply((**o).clone()));
    }
    store.apply(watcher::Event::InitDone);
}

/// The median and best of `runs` runs of `f`.
fn timed(runs: usize, mut f: impl FnMut()) -> (std::time::Duration, std::time::Duration) {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    let best = *times.iter().min().unwrap();
    (median(times), best)
}

fn main() {
    let runs: usize = std::env::var("IPWARDEN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(21);
    let ns = |i: usize| format!("ns-{}", i % 100);
    // Hashed names: the stores hand objects over in no particular order.
    let mixed = |i: usize| (i * 7919) % 10_000;
    let services = objects::<Service>((0..10_000).map(mixed).map(|i| {
        json!({"metadata": {"name": format!("svc-{i}"), "namespace": ns(i)},
            "spec": {"clusterIP": format!("10.96.{}.{}", i / 250, i % 250),
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    }));
    let slices = objects::<EndpointSlice>((0..10_000).map(mixed).map(|i| {
        json!({"metadata": {"name": format!("svc-{i}-abcde"), "namespace": ns(i),
                "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [format!("10.244.{}.{}", i / 250, i % 250)],
                "conditions": {"ready": true}, "nodeName": "node-a"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    }));
    let pods = objects::<Pod>((0..5_000).map(|i| {
        json!({"metadata": {"name": format!("pod-{i}"), "namespace": ns(i),
                "labels": {"app": format!("app-{}", i % 50)}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c"}]},
            "status": {"phase": "Running",
                "podIP": format!("10.244.{}.{}", i / 250, i % 250)}})
    }));
    let namespaces = objects::<Namespace>((0..100).map(|i| json!({"metadata": {"name": ns(i)}})));
    let policies = objects::<NetworkPolicy>((0..500).map(|i| {
        json!({"metadata": {"name": format!("np-{i}"), "namespace": ns(i)},
            "spec": {"podSelector": {"matchLabels": {"app": format!("app-{}", i % 50)}}}})
    }));
    let node = objects::<Node>(std::iter::once(json!({"metadata": {"name": "node-a"}}))).pop();
    let host = HostInfo {
        node_name: "node-a".into(),
        local_addresses: vec![],
    };
    let sorted = timed(runs, || {
        let s = Snapshot::from_shared(
            services.clone(),
            slices.clone(),
            pods.clone(),
            namespaces.clone(),
            policies.clone(),
            node.clone(),
            host.clone(),
        );
        assert_eq!(s.slices_of("ns-7", "svc-107").count(), 1);
    });
    let stores = Stores::default();
    fill(&stores.services, &services);
    fill(&stores.endpoint_slices, &slices);
    fill(&stores.pods, &pods);
    fill(&stores.namespaces, &namespaces);
    fill(&stores.network_policies, &policies);
    fill(&stores.nodes, node.as_slice());
    let ordered = timed(runs, || {
        let s = stores.snapshot(&host);
        assert_eq!(s.slices_of("ns-7", "svc-107").count(), 1);
    });
    // What a snapshot cost before the stores shared their lists: a copy of
    // every kind's pointers (and the slices' second order), dropped after.
    let copied = timed(runs, || {
        let lists = (
            stores.services.all().to_vec(),
            stores.endpoint_slices.all().to_vec(),
            stores.endpoint_slices.all_by_group().to_vec(),
            stores.pods.all().to_vec(),
            stores.namespaces.all().to_vec(),
            stores.network_policies.all().to_vec(),
        );
        assert_eq!(lists.0.len(), 10_000);
    });
    // One slice's endpoint flips between two addresses: a replace in both
    // of the store's orders.
    let mut slice = (*slices[107]).clone();
    let mut flip = |stores: &Stores| {
        let ep = &mut slice.endpoints[0];
        ep.addresses[0] = if ep.addresses[0].ends_with(".1") {
            "10.9.9.2".into()
        } else {
            "10.9.9.1".into()
        };
        stores
            .endpoint_slices
            .apply(watcher::Event::Apply(slice.clone()));
    };
    let event = timed(runs, || flip(&stores));
    // The same update while a snapshot holds the lists (a sync under way):
    // the store copies the slices' two lists first, once per snapshot.
    let held = timed(runs, || {
        let snapshot = stores.snapshot(&host);
        flip(&stores);
        drop(snapshot);
    });
    println!("| snapshot of 10k Services, 10k slices, 5k Pods, 500 policies | median | best |");
    println!("|---|---|---|");
    let line = |what: &str, (median, best): (std::time::Duration, std::time::Duration)| {
        println!("| {what} ({runs} runs) | {median:.1?} | {best:.1?} |");
    };
    line(
        "`Stores::snapshot`: the ordered stores, lists shared",
        ordered,
    );
    line(
        "a copy of every kind's pointers (the snapshot before the lists were shared)",
        copied,
    );
    line("`Snapshot::from_shared`: a sort of every kind", sorted);
    line("one EndpointSlice update applied to its store", event);
    line(
        "the same update while a snapshot holds the store's lists",
        held,
    );
}
