//! Where the agent's bytes go: the agent bench's cluster (N Services of one
//! port with a three-endpoint slice each, beside the generated pods and
//! NetworkPolicies), decoded, trimmed and held in the source's ordered
//! stores (`cluster/store.rs`) as the agent holds it, then each controller's desired state computed from
//! the snapshot, the service controller's keyed table, and `/state`'s list
//! of virtual services gathered (as before) and streamed (as now). A
//! counting allocator reports the bytes each step keeps
//! (live after it, per object) and the transient peak while it runs. No
//! kernel, no root.
//!
//! ```text
//! IPWARDEN_BENCH_SIZES=10000 cargo bench -p ipwarden --bench memory
//! ```
//!
//! `IPWARDEN_BENCH_MANIFESTS=DIR` also writes the cluster as manifests;
//! `IPWARDEN_BENCH_SERVE=DIR` serves it instead from the fake API server
//! (kubeconfig in DIR, until DIR/stop exists), for an agent to profile.

#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "../tests/support/lab_apiserver.rs"]
mod lab_apiserver;

mod common;
#[path = "agent/objects.rs"]
#[allow(dead_code)]
mod objects;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering::Relaxed},
};

use common::env_list;
use ipwarden::{
    cluster::{compact::Keep, Grouped, HostInfo, Ordered, Stores},
    controllers::{policies, services},
};
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
    networking::v1::NetworkPolicy,
};
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The system allocator, counting live bytes and their peak, and the
/// live bytes as glibc's chunks hold them.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static CHUNKS: AtomicUsize = AtomicUsize::new(0);

/// The bytes glibc's malloc takes for a request of `size` (64-bit): an
/// 8-byte header, 16-byte alignment, 32 bytes at least. Hundreds of
/// thousands of small strings cost this, not their length.
fn chunk(size: usize) -> usize {
    ((size + 8 + 15) & !15).max(32)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
            CHUNKS.fetch_add(chunk(l.size()), Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
        CHUNKS.fetch_sub(chunk(l.size()), Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The bytes the last [`measured`] step left live in malloc's chunks.
static KEPT_CHUNKS: AtomicUsize = AtomicUsize::new(0);

/// Runs `f`; returns its value, the bytes it left live and its peak above
/// the start (and notes the chunks left live for [`row`]).
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let before = LIVE.load(Relaxed);
    let chunks = CHUNKS.load(Relaxed);
    PEAK.store(before, Relaxed);
    let v = f();
    let kept = LIVE.load(Relaxed).saturating_sub(before);
    KEPT_CHUNKS.store(CHUNKS.load(Relaxed).saturating_sub(chunks), Relaxed);
    (v, kept, PEAK.load(Relaxed) - before)
}

/// A store filled as the agent's watcher fills it: decoded, kept (trimmed
/// or converted to its compact type), applied.
fn fill<D>(store: &Ordered<D::Kept>, values: &[Value])
where
    D: DeserializeOwned + Keep<Kept: Grouped>,
{
    store.apply(watcher::Event::Init);
    for v in values {
        let o: D = serde_json::from_value(v.clone()).expect("object");
        store.apply(watcher::Event::InitApply(o.keep()));
    }
    store.apply(watcher::Event::InitDone);
}

/// The cluster as a manifests folder, for `ipwarden run --manifests` (an
/// agent on the same cluster without an API server, to profile it).
fn write_manifests(
    dir: &std::path::Path,
    services: &[Value],
    slices: &[Value],
    g: &common::cluster::Generated,
) {
    std::fs::create_dir_all(dir).expect("manifests folder");
    let node = serde_json::json!({"metadata": {"name": "node-a"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.1.1"}]}});
    let kinds: [(&str, &str, &[Value]); 6] = [
        ("v1", "Namespace", &g.namespaces),
        ("v1", "Node", std::slice::from_ref(&node)),
        ("v1", "Pod", &g.pods),
        ("networking.k8s.io/v1", "NetworkPolicy", &g.policies),
        ("v1", "Service", services),
        ("discovery.k8s.io/v1", "EndpointSlice", slices),
    ];
    for (api, kind, items) in kinds {
        let items: Vec<Value> = items
            .iter()
            .map(|v| {
                let mut v = v.clone();
                v["apiVersion"] = api.into();
                v["kind"] = kind.into();
                v
            })
            .collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        std::fs::write(dir.join(format!("{kind}.json")), list.to_string()).expect("manifest");
    }
}

/// Serves the cluster from the tests' fake API server on 127.0.0.1 of the
/// network namespace the bench runs in, writes `dir/kubeconfig`, and
/// serves until `dir/stop` exists: for `ipwarden run --kubeconfig` in the
/// same namespace, to profile the agent on its real source.
fn serve(
    dir: &std::path::Path,
    services: &[Value],
    slices: &[Value],
    g: &common::cluster::Generated,
) {
    use fake_apiserver::{FakeApiServer, Res};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let server = {
        let _in = rt.enter();
        FakeApiServer::start_on_std(listener)
    };
    let node = serde_json::json!({"metadata": {"name": "node-a"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.1.1"}]}});
    let kinds: [(Res, &[Value]); 6] = [
        (Res::Namespaces, &g.namespaces),
        (Res::Nodes, std::slice::from_ref(&node)),
        (Res::Pods, &g.pods),
        (Res::NetworkPolicies, &g.policies),
        (Res::Services, services),
        (Res::EndpointSlices, slices),
    ];
    for (res, items) in kinds {
        for v in items {
            server.apply(res, v.clone());
        }
    }
    std::fs::create_dir_all(dir).expect("serve folder");
    let kubeconfig = server.kubeconfig(dir);
    println!("serving: {}", kubeconfig.display());
    while !dir.join("stop").exists() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(server);
}

fn kib(b: usize) -> String {
    format!("{:.0} KiB", b as f64 / 1024.0)
}

/// `/state`'s list of virtual services from the service controller's
/// keyed table: gathered first (the whole state assembled, a JSON tree,
/// then its text, as before) and streamed from the table (as now).
fn state_rows(snapshot: &ipwarden::cluster::Snapshot, services_n: usize) {
    use ipwarden::api::state::virtual_service;
    use serde::Serializer;
    let (table, k, p) = measured(|| {
        let mut table = services::ServiceTable::new(services::Options::default());
        table.rebuild(snapshot);
        table
    });
    row("services: keyed table", services_n, k, p);
    // What a full sync holds beside the table: the whole state assembled
    // (before), or the parts it writes from the table in place (now).
    let (state, _, p) = measured(|| table.assemble());
    row(
        "services: full sync, whole state assembled (before)",
        0,
        0,
        p,
    );
    drop(state);
    let (parts, _, p) = measured(|| {
        let full = table.full_state();
        let sets = table.sets();
        let desired: Vec<_> = table.virtual_services().collect();
        (full, sets, desired.len())
    });
    row("services: full sync, parts from the table (now)", 0, 0, p);
    drop(parts);
    let (text, _, p) = measured(|| {
        let state = table.assemble();
        let tree: Vec<Value> = state.virtual_services.iter().map(virtual_service).collect();
        serde_json::to_string(&tree).expect("JSON")
    });
    row("/state virtual services, gathered (text)", 0, text.len(), p);
    drop(text);
    let (text, _, p) = measured(|| {
        let mut out = Vec::new();
        serde_json::Serializer::new(&mut out)
            .collect_seq(table.virtual_services().map(virtual_service))
            .expect("JSON");
        out
    });
    row("/state virtual services, streamed (text)", 0, text.len(), p);
}

/// The policy controller's first full sync: its index, the whole state
/// assembled from it for the kernel (before), the sets and the chains
/// parts (now, one after the other), and the summary the board keeps.
fn index_rows(snapshot: &ipwarden::cluster::Snapshot, policies_n: usize) {
    use ipwarden::controllers::policies::incremental::PolicyIndex;
    let opts = policies::Options::default();
    let (index, k, p) = measured(|| PolicyIndex::build(snapshot, &opts));
    row("policies: index (per policy)", policies_n, k, p);
    let (state, k, p) = measured(|| index.state());
    row("policies: state assembled from the index", policies_n, k, p);
    drop(state);
    // A full sync now holds one part at a time: the sets until written,
    // then the chains.
    let (sets, k, p) = measured(|| index.state_without_chains());
    row("policies: full sync, sets part", policies_n, k, p);
    drop(sets);
    let (tables, k, p) = measured(|| index.table_plans());
    row("policies: full sync, chains part", policies_n, k, p);
    drop(tables);
    let (summary, k, p) = measured(|| index.summary());
    row("policies: summary kept on the board", policies_n, k, p);
    drop((summary, index));
}

fn row(what: &str, n: usize, kept: usize, peak: usize) {
    let chunks = if kept > 0 {
        kib(KEPT_CHUNKS.load(Relaxed))
    } else {
        String::new()
    };
    println!(
        "| {what} | {n} | {} | {chunks} | {} | {} |",
        kib(kept),
        if n > 0 {
            format!("{:.0}", kept as f64 / n as f64)
        } else {
            String::new()
        },
        kib(peak)
    );
}

fn main() {
    let one = |key: &str, default: &str| env_list(key, default)[0];
    let pods = one("IPWARDEN_BENCH_PODS", "5000");
    let policies_n = one("IPWARDEN_BENCH_POLICIES", "1000");
    let namespaces = one("IPWARDEN_BENCH_NAMESPACES", "50");
    for services_n in env_list("IPWARDEN_BENCH_SIZES", "10000") {
        let cluster = objects::Cluster::new(services_n, pods, policies_n, namespaces);
        let services_json: Vec<Value> =
            (0..services_n).map(|i| cluster.service(i, false)).collect();
        let slices_json: Vec<Value> = (0..services_n).map(|i| cluster.slice(i)).collect();
        let g = &cluster.generated;
        if let Ok(dir) = std::env::var("IPWARDEN_BENCH_MANIFESTS") {
            write_manifests(dir.as_ref(), &services_json, &slices_json, g);
        }
        if let Ok(dir) = std::env::var("IPWARDEN_BENCH_SERVE") {
            serve(dir.as_ref(), &services_json, &slices_json, g);
            return;
        }
        println!("\n{services_n} Services ({} endpoints each), {pods} pods, {policies_n} NetworkPolicies, {namespaces} namespaces\n", objects::ENDPOINTS);
        println!("| held | objects | bytes kept | in malloc's chunks | bytes per object | transient peak |");
        println!("|---|---:|---:|---:|---:|---:|");
        let stores = Stores::default();
        let ((), k, p) = measured(|| fill::<Service>(&stores.services, &services_json));
        row("store: Services", services_n, k, p);
        let ((), k, p) = measured(|| fill::<EndpointSlice>(&stores.endpoint_slices, &slices_json));
        row("store: EndpointSlices", services_n, k, p);
        let ((), k, p) = measured(|| fill::<Pod>(&stores.pods, &g.pods));
        row("store: Pods", pods, k, p);
        let ((), k, p) = measured(|| fill::<Namespace>(&stores.namespaces, &g.namespaces));
        row("store: Namespaces", g.namespaces.len(), k, p);
        let ((), k, p) = measured(|| fill::<NetworkPolicy>(&stores.network_policies, &g.policies));
        row("store: NetworkPolicies", policies_n, k, p);
        let host = HostInfo {
            node_name: "node-a".into(),
            local_addresses: vec!["10.0.1.1".parse().expect("address")],
        };
        let (snapshot, k, p) = measured(|| stores.snapshot(&host));
        row("one snapshot (pointers, in store order)", 0, k, p);
        let (service_state, k, p) = measured(|| services::desired(&snapshot));
        row("services: desired state (per Service)", services_n, k, p);
        let (policy_state, k, p) =
            measured(|| policies::desired(&snapshot, &policies::Options::default()));
        row("policies: desired state (per policy)", policies_n, k, p);
        state_rows(&snapshot, services_n);
        index_rows(&snapshot, policies_n);
        println!("\nlive at the end: {}", kib(LIVE.load(Relaxed)));
        drop((service_state, policy_state, snapshot, stores));
    }
}
