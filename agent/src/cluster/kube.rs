//! The API server source: one kube-runtime reflector per kind the
//! controllers read (Services, EndpointSlices, Pods, Namespaces,
//! NetworkPolicies, and this node's Node), its retries backed off
//! ([`super::backoff`]).
//!
//! - Objects are trimmed to what the controllers read before they are
//!   stored ([`super::trim`]), and an update that changes nothing kept is
//!   dropped before it reaches the store or the loop.
//! - An object that does not deserialize never fails a whole list and
//!   never opens the firewall: it keeps its last good version, or stands
//!   in as deny-all when a NetworkPolicy ([`super::unreadable`]).
//! - The store of a kind ([`super::store`]) keeps its objects in
//!   (namespace, name) order as events arrive, so a snapshot is pointer
//!   copies without a sort; it swaps its content only when a (re)list is
//!   complete, so a relist never shows an empty or partial kind; objects
//!   deleted during a watch gap are gone after it, and the loop hears
//!   [`Change::Relisted`].
//! - `snapshot()` is `None` until every kind has finished its first list.
//! - ClusterNetworkPolicy is a CRD that may be absent: its task asks the
//!   API server for the resource first. Absent (404): the source does not
//!   wait for it, the snapshot holds none, and the task asks again every
//!   `crd_poll`; once installed, its reflector starts and its first list
//!   is sent as [`Change::Relisted`] (a full policy sync). Present at
//!   start: Ready waits for its first list like every other kind's.
//! - Each object reported unreadable also gets a Warning Event naming the
//!   field ([`super::events`]; one per object and reason per 5 minutes).
//! - A failing list or watch keeps the last good content, logs and counts
//!   the failure, and marks the kind failing until it reads again.

use crate::locks::LockOrRecover;
use std::{
    fmt::Debug,
    path::Path,
    pin::pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use ::kube::{
    api::Api,
    config::{Config, KubeConfigOptions, Kubeconfig},
    runtime::watcher,
    Client, Resource,
};
use anyhow::{Context, Result};

use crate::cli::flags::master_url;
use futures::{future, StreamExt, TryStreamExt};
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
    networking::v1::NetworkPolicy,
};
use serde::de::DeserializeOwned;
use tokio::{sync::mpsc::UnboundedSender, task::JoinHandle};

use super::{
    backoff::backed_off,
    cnp::ClusterNetworkPolicy,
    compact::{Keep, Stored},
    events::EventPoster,
    guard::{unguard, Guarded},
    source::{Change, HealthBook, Kind, ResourceHealth, Source},
    store::{Applied, Grouped, Ordered, Stores},
    unreadable::{NeverRead, Unreadable, UnreadableBook},
    HostInfo, Snapshot,
};

/// A failure of the watch phase (the list worked) clears when the stream
/// stays quiet this long: longer than the longest backoff (30 s, doubled
/// by jitter) plus the connect timeout (30 s), so a retry that was going to
/// fail would have. Any event clears it sooner.
const WATCH_RECOVERED_AFTER: Duration = Duration::from_secs(100);

/// A client as kube-router builds it: `--kubeconfig` (its cluster URL
/// replaced by `--master` when both are given); `--master` alone (with the
/// pod's service-account token and CA when running in a pod); else
/// `Config::infer` ($KUBECONFIG, ~/.kube/config, then in-cluster). A
/// `--master` without a scheme gets `https://`, as client-go reads it.
pub async fn client(kubeconfig: Option<&Path>, master: Option<&str>) -> Result<Client> {
    let mut config = match (kubeconfig, master) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        (None, Some(url)) => match Config::incluster() {
            Ok(c) => c,
            Err(_) => Config::new(master_url(url).map_err(anyhow::Error::msg)?),
        },
        (None, None) => Config::infer().await.context(
            "no --kubeconfig or --master, no $KUBECONFIG or ~/.kube/config, and not in a pod",
        )?,
    };
    if let Some(url) = master {
        config.cluster_url = master_url(url).map_err(anyhow::Error::msg)?;
    }
    Client::try_from(config).context("building the API client")
}

/// The running reflectors. Dropping it stops them.
pub struct KubeSource {
    stores: Stores,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the per-kind tasks share.
struct Shared {
    /// Every kind has finished its first list (and Ready is sent).
    ready: AtomicBool,
    /// The kinds that finished their first list. Held while a change is
    /// sent, so no Object or Relisted can overtake Ready on the channel.
    listed: Mutex<Vec<Kind>>,
    /// Ready waits for ClusterNetworkPolicy's first list too (its CRD was
    /// found, or has not been looked for yet).
    cluster_policies_awaited: AtomicBool,
    health: HealthBook,
    unreadable: UnreadableBook,
    changes: UnboundedSender<Change>,
}

impl Shared {
    /// A kind finished a (re)list: sends Ready when it was the last kind to
    /// finish its first, Relisted when it was listed again after Ready.
    fn listed(&self, kind: Kind) {
        self.health.listed(kind.resource());
        let mut listed = self.listed.lock_or_recover();
        let first = !listed.contains(&kind);
        tracing::debug!(%kind, first, "listed");
        if first {
            listed.push(kind);
        }
        if self.ready.load(Ordering::SeqCst) {
            if !first {
                tracing::info!(%kind, "listed again after a watch gap");
                let _ = self.changes.send(Change::Relisted(kind));
            } else if kind == Kind::ClusterNetworkPolicy {
                tracing::info!(%kind, "its CRD was installed: listed");
                let _ = self.changes.send(Change::Relisted(kind));
            }
        } else {
            self.ready_if_complete(&listed);
        }
    }

    /// Sends Ready when every kind the source waits for has listed.
    fn ready_if_complete(&self, listed: &[Kind]) {
        let awaited = self.cluster_policies_awaited.load(Ordering::SeqCst);
        let optional_done = !awaited || listed.contains(&Kind::ClusterNetworkPolicy);
        if Kind::REQUIRED.iter().all(|k| listed.contains(k)) && optional_done {
            tracing::info!("every kind is listed: the cluster view is complete");
            // Ready before it is sent: whoever hears it can take a snapshot.
            self.ready.store(true, Ordering::SeqCst);
            let _ = self.changes.send(Change::Ready);
        }
    }

    /// The ClusterNetworkPolicy CRD is not there (yet): stop waiting for it.
    fn cluster_policies_absent(&self) {
        let listed = self.listed.lock_or_recover();
        if self.cluster_policies_awaited.swap(false, Ordering::SeqCst)
            && !self.ready.load(Ordering::SeqCst)
        {
            self.ready_if_complete(&listed);
        }
    }

    fn object(&self, kind: Kind, namespace: Option<String>, name: String) {
        let _order = self.listed.lock_or_recover();
        if self.ready.load(Ordering::SeqCst) {
            let _ = self.changes.send(Change::Object {
                kind,
                namespace,
                name,
            });
        }
    }
}

/// What a kind's object type must offer to be watched here.
trait Watched:
    Resource<DynamicType = ()>
    + Clone
    + Debug
    + Default
    + DeserializeOwned
    + NeverRead
    + Keep<Kept: Grouped>
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
        + Default
        + DeserializeOwned
        + NeverRead
        + Keep<Kept: Grouped>
        + Send
        + Sync
        + 'static
{
}

impl KubeSource {
    /// Starts one reflector per kind on the current tokio runtime; changes
    /// go to `changes` (the first one is [`Change::Ready`], or Health while
    /// a kind cannot be listed).
    pub fn start(client: Client, node_name: &str, changes: UnboundedSender<Change>) -> KubeSource {
        Self::start_polling_crds(client, node_name, changes, CRD_POLL)
    }

    /// [`KubeSource::start`], asking for an absent ClusterNetworkPolicy
    /// CRD every `crd_poll`.
    pub fn start_polling_crds(
        client: Client,
        node_name: &str,
        changes: UnboundedSender<Change>,
        crd_poll: Duration,
    ) -> KubeSource {
        let health = HealthBook::new(changes.clone());
        for kind in Kind::REQUIRED {
            health.register(kind.resource());
        }
        let shared = Arc::new(Shared {
            ready: AtomicBool::new(false),
            listed: Mutex::new(Vec::new()),
            cluster_policies_awaited: AtomicBool::new(true),
            health,
            unreadable: UnreadableBook::new(changes.clone())
                .with_events(EventPoster::start(client.clone(), node_name)),
            changes,
        });
        // Paginated consistent lists (500 a page): a relist after a 410
        // is never older than what was already seen.
        let all = watcher::Config::default;
        let mut tasks = Vec::new();
        let services = spawn::<Service>(Kind::Service, &client, all(), &shared, &mut tasks);
        let endpoint_slices =
            spawn::<EndpointSlice>(Kind::EndpointSlice, &client, all(), &shared, &mut tasks);
        let pods = spawn::<Pod>(Kind::Pod, &client, all(), &shared, &mut tasks);
        let namespaces = spawn::<Namespace>(Kind::Namespace, &client, all(), &shared, &mut tasks);
        let network_policies =
            spawn::<NetworkPolicy>(Kind::NetworkPolicy, &client, all(), &shared, &mut tasks);
        let own_node = all().fields(&format!("metadata.name={node_name}"));
        let nodes = spawn::<Node>(Kind::Node, &client, own_node, &shared, &mut tasks);
        let cluster_network_policies = Ordered::<ClusterNetworkPolicy>::default();
        tasks.push(tokio::spawn(watch_once_installed(
            client.clone(),
            cluster_network_policies.clone(),
            shared.clone(),
            crd_poll,
        )));
        KubeSource {
            stores: Stores {
                services,
                endpoint_slices,
                pods,
                namespaces,
                network_policies,
                nodes,
                cluster_network_policies,
            },
            shared,
            tasks,
        }
    }

    /// Has every kind finished its first list?
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst)
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Source for KubeSource {
    /// None too while this node's Node is missing: with no Node (a wrong
    /// `--node-name`) nothing is programmed, rather than every local
    /// endpoint and pod chain removed. Reported as a failure of `nodes`
    /// until the Node is seen.
    fn snapshot(&self, host: &HostInfo) -> Option<Snapshot> {
        if !self.is_ready() {
            return None;
        }
        let snapshot = self.stores.snapshot(host);
        if snapshot.node.is_none() {
            self.shared.health.failed(
                Kind::Node.resource(),
                format!(
                    "no Node named {:?} in the cluster (--node-name): nothing is programmed until it exists",
                    host.node_name
                ),
            );
            return None;
        }
        Some(snapshot)
    }

    fn health(&self) -> Vec<ResourceHealth> {
        self.shared.health.snapshot()
    }

    fn listed(&self) -> bool {
        self.is_ready()
    }

    fn unreadable(&self) -> Vec<Unreadable> {
        self.shared.unreadable.list()
    }
}

fn spawn<K: Watched>(
    kind: Kind,
    client: &Client,
    config: watcher::Config,
    shared: &Arc<Shared>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Ordered<K::Kept> {
    let store = Ordered::<K::Kept>::default();
    let api = Api::<Guarded<K>>::all(client.clone());
    tasks.push(tokio::spawn(run_kind(
        kind,
        api,
        config,
        store.clone(),
        shared.clone(),
    )));
    store
}

/// How often an absent ClusterNetworkPolicy CRD is looked for.
pub const CRD_POLL: Duration = Duration::from_secs(30);

/// Waits until the API server serves ClusterNetworkPolicies (a list of
/// one answers), then watches them like every other kind. Any answer but
/// a list counts as absent for readiness (an optional kind never holds the
/// agent back) and is asked again after `poll`.
async fn watch_once_installed(
    client: Client,
    store: Ordered<ClusterNetworkPolicy>,
    shared: Arc<Shared>,
    poll: Duration,
) {
    let kind = Kind::ClusterNetworkPolicy;
    let probe = Api::<Guarded<ClusterNetworkPolicy>>::all(client.clone());
    loop {
        match probe
            .list(&::kube::api::ListParams::default().limit(1))
            .await
        {
            Ok(_) => break,
            Err(::kube::Error::Api(s)) if s.code == 404 => {
                tracing::debug!(%kind, "not served (CRD not installed): asking again later");
            }
            Err(e) => {
                tracing::warn!(%kind, "cannot tell whether it is served: {}", describe(&e));
            }
        }
        shared.cluster_policies_absent();
        tokio::time::sleep(poll).await;
    }
    let api = Api::<Guarded<ClusterNetworkPolicy>>::all(client);
    run_kind(kind, api, watcher::Config::default(), store, shared).await;
}

/// One kind: watch, unwrap the guard, keep (trim or convert), drop no-op
/// updates, store, and tell the loop.
async fn run_kind<K: Watched>(
    kind: Kind,
    api: Api<Guarded<K>>,
    config: watcher::Config,
    store: Ordered<K::Kept>,
    shared: Arc<Shared>,
) {
    let resource = kind.resource();
    let held = store.clone();
    let unreadable = shared.unreadable.clone();
    let stream = backed_off(watcher(api, config))
        .try_filter_map(move |event| future::ready(Ok(unguard(kind, event, &held, &unreadable))));
    let mut stream = pin!(stream);
    // Set by a failure of the watch phase, which only an event or a quiet
    // stream can clear (a watch that started sends nothing until a change).
    let mut watch_failing = false;
    loop {
        let next = if watch_failing {
            match tokio::time::timeout(WATCH_RECOVERED_AFTER, stream.next()).await {
                Ok(next) => next,
                Err(_quiet) => {
                    watch_failing = false;
                    shared.health.ok(resource);
                    continue;
                }
            }
        } else {
            stream.next().await
        };
        let Some(item) = next else { break };
        match item {
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                tracing::debug!(%kind, "watch expired (410 Gone): listing again");
            }
            Err(e) => {
                watch_failing = matches!(
                    e,
                    watcher::Error::WatchStartFailed(_)
                        | watcher::Error::WatchFailed(_)
                        | watcher::Error::WatchError(_)
                );
                shared
                    .health
                    .failed(resource, format!("{resource}: {}", describe(&e)));
            }
            Ok(event) => {
                if !matches!(event, watcher::Event::Init) {
                    watch_failing = false;
                    shared.health.ok(resource);
                }
                let named = match &event {
                    watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
                        Some((o.namespace().map(String::from), o.name().to_string()))
                    }
                    _ => None,
                };
                match (store.apply(event), named) {
                    (Applied::Listed, _) => shared.listed(kind),
                    (Applied::Changed, Some((namespace, name))) => {
                        shared.object(kind, namespace, name)
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The error and its causes on one line.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filled<K: Watched>(objects: impl Iterator<Item = serde_json::Value>) -> Ordered<K::Kept> {
        let store = Ordered::<K::Kept>::default();
        store.apply(watcher::Event::Init);
        for v in objects {
            let o: K = serde_json::from_value(v).unwrap();
            store.apply(watcher::Event::InitApply(o.keep()));
        }
        store.apply(watcher::Event::InitDone);
        store
    }

    /// 10k Services with a slice each, 5k Pods, 100 namespaces, 500
    /// policies: the snapshot the loop takes after each debounce holds them
    /// all and finds a Service's slice. What it costs is measured by the
    /// `snapshot` bench (BENCHMARKS.md), not asserted here.
    #[test]
    fn a_snapshot_of_ten_thousand_services_holds_them_all() {
        let ns = |i: usize| format!("ns-{}", i % 100);
        let stores = Stores {
            services: filled::<Service>((0..10_000).map(|i| {
                json!({"metadata": {"name": format!("svc-{i}"), "namespace": ns(i)},
                    "spec": {"clusterIP": format!("10.96.{}.{}", i / 250, i % 250),
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
            })),
            endpoint_slices: filled::<EndpointSlice>((0..10_000).map(|i| {
                json!({"metadata": {"name": format!("svc-{i}-abcde"), "namespace": ns(i),
                        "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [format!("10.244.{}.{}", i / 250, i % 250)],
                        "conditions": {"ready": true}, "nodeName": "node-a"}],
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
            })),
            pods: filled::<Pod>((0..5_000).map(|i| {
                json!({"metadata": {"name": format!("pod-{i}"), "namespace": ns(i),
                        "labels": {"app": format!("app-{}", i % 50)}},
                    "spec": {"nodeName": "node-a", "containers": [{"name": "c",
                        "ports": [{"name": "http", "containerPort": 8080}]}]},
                    "status": {"phase": "Running",
                        "podIP": format!("10.244.{}.{}", i / 250, i % 250)}})
            })),
            namespaces: filled::<Namespace>((0..100).map(|i| json!({"metadata": {"name": ns(i)}}))),
            network_policies: filled::<NetworkPolicy>((0..500).map(|i| {
                json!({"metadata": {"name": format!("np-{i}"), "namespace": ns(i)},
                    "spec": {"podSelector": {"matchLabels": {"app": format!("app-{}", i % 50)}}}})
            })),
            nodes: filled::<Node>(std::iter::once(json!({"metadata": {"name": "node-a"}}))),
            cluster_network_policies: filled::<ClusterNetworkPolicy>(std::iter::empty()),
        };
        let host = HostInfo {
            node_name: "node-a".into(),
            local_addresses: vec![],
        };
        let s = stores.snapshot(&host);
        assert_eq!(s.services.len(), 10_000);
        assert_eq!(s.endpoint_slices.len(), 10_000);
        assert_eq!(s.pods.len(), 5_000);
        assert_eq!(s.network_policies.len(), 500);
        assert_eq!(s.slices_of("ns-7", "svc-107").count(), 1);
        assert!(s.node.is_some());
    }
}
