//! The cluster sources behind the `Source` seam.
//!
//! The kube source is driven by the real kube client against a fake API
//! server on loopback (tests/support/fake_apiserver.rs) that answers as a
//! real one writes: lists with resourceVersions, chunked watches,
//! bookmarks, `410 Expired`, 403 and 500 Status answers, dropped
//! connections. The manifests source is driven through real files and
//! inotify. No root needed; every wait is on the channel of Changes (or the
//! server's request log) with a timeout, never a sleep.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use fake_apiserver::{FakeApiServer, Res};
use ipwarden::cluster::{
    kube::{client, KubeSource},
    manifests::ManifestsSource,
    Change, HostInfo, Kind, Snapshot, Source,
};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const NODE: &str = "node-a";
const WAIT: Duration = Duration::from_secs(20);

fn host() -> HostInfo {
    HostInfo {
        node_name: NODE.into(),
        local_addresses: vec![],
    }
}

/// A folder removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ipwarden-kube-source-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for the change `pred` accepts; returns every change seen up to
/// and including it.
async fn until(
    changes: &mut UnboundedReceiver<Change>,
    what: &str,
    mut pred: impl FnMut(&Change) -> bool,
) -> Vec<Change> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(c) = changes.recv().await {
            let hit = pred(&c);
            seen.push(c);
            if hit {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(found, "no {what} within {WAIT:?}; changes seen: {seen:#?}");
    seen
}

fn is_health(c: &Change, res: &str, failing: bool) -> bool {
    matches!(c, Change::Health { resource, error } if resource == res && error.is_some() == failing)
}

fn is_object(c: &Change, k: Kind, n: &str) -> bool {
    matches!(c, Change::Object { kind, name, .. } if *kind == k && name == n)
}

fn names<T: ipwarden::cluster::compact::Stored>(objects: &[std::sync::Arc<T>]) -> Vec<String> {
    objects.iter().map(|o| o.name().to_string()).collect()
}

/// A query parameter of a logged request.
fn param(request: &str, name: &str) -> Option<String> {
    let query = request.split_once('?')?.1;
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

fn services(s: &Snapshot) -> Vec<String> {
    names(&s.services)
}

// Objects as a user writes them; the server adds the rest.

fn svc(name: &str, port: u16) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name},
            "annotations": {"kube-router.io/service.scheduler": "lc",
                "kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}"}},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "selector": {"app": name}, "sessionAffinity": "None",
            "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080}]},
        "status": {"loadBalancer": {}}
    })
}

fn slice(name: &str, service: &str, ip: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default",
            "labels": {"kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true,
            "terminating": false}, "nodeName": NODE, "zone": "z1",
            "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1"}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    })
}

fn pod(name: &str, ip: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "web", "image": "nginx",
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn namespace(name: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}

fn node(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.56.10"},
            {"type": "Hostname", "address": name}],
            "images": [{"names": ["nginx"], "sizeBytes": 1000000}]}
    })
}

fn policy(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {}}]}]}
    })
}

/// One object of each kind, Service `web`, and another node's Node.
fn seed(server: &FakeApiServer) {
    server.apply(Res::Namespaces, namespace("default"));
    server.apply(Res::Services, svc("web", 80));
    server.apply(Res::EndpointSlices, slice("web-abcde", "web", "10.244.1.2"));
    server.apply(Res::Pods, pod("web-1", "10.244.1.2"));
    server.apply(Res::NetworkPolicies, policy("allow-same-namespace"));
    server.apply(Res::Nodes, node(NODE));
    server.apply(Res::Nodes, node("node-b"));
}

struct Agent {
    source: KubeSource,
    changes: UnboundedReceiver<Change>,
    _dir: TempDir,
}

impl Agent {
    /// The kube source, connected through a kubeconfig as `--kubeconfig`.
    async fn start(server: &FakeApiServer) -> Agent {
        let dir = TempDir::new();
        let kubeconfig = server.kubeconfig(&dir.0);
        let client = client(Some(&kubeconfig), None).await.unwrap();
        let (tx, changes) = unbounded_channel();
        Agent {
            source: KubeSource::start(client, NODE, tx),
            changes,
            _dir: dir,
        }
    }

    /// Started, and Ready seen.
    async fn ready(server: &FakeApiServer) -> Agent {
        let mut a = Agent::start(server).await;
        let seen = until(&mut a.changes, "Ready", |c| *c == Change::Ready).await;
        assert_eq!(seen, [Change::Ready], "Ready comes first");
        a
    }

    fn snapshot(&self) -> Snapshot {
        self.source.snapshot(&host()).expect("ready")
    }

    async fn until(&mut self, what: &str, pred: impl FnMut(&Change) -> bool) -> Vec<Change> {
        until(&mut self.changes, what, pred).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_snapshot_before_every_kind_has_finished_its_first_list() {
    let server = FakeApiServer::start().await;
    seed(&server);
    server.hold_lists(Res::Namespaces);
    server.fail_lists(Res::Pods, 500, 2);
    let mut agent = Agent::start(&server).await;

    // Pods fail twice (500), then list; Namespaces wait.
    let seen = agent
        .until("pods failing", |c| is_health(c, "pods", true))
        .await;
    assert!(!seen.contains(&Change::Ready));
    let failing = agent.source.failing();
    assert!(
        failing
            .iter()
            .any(|(r, e)| r == "pods" && e.contains("etcdserver: request timed out")),
        "{failing:?}"
    );
    assert!(agent.source.snapshot(&host()).is_none());
    let seen = agent
        .until("pods listed", |c| is_health(c, "pods", false))
        .await;
    assert!(!seen.contains(&Change::Ready), "{seen:?}");
    server
        .wait_request("a list of namespaces", |r| {
            r.starts_with("GET /api/v1/namespaces?") && !r.contains("watch=true")
        })
        .await;
    assert!(
        agent.source.snapshot(&host()).is_none(),
        "no snapshot while Namespaces are not listed"
    );
    assert!(agent.changes.try_recv().is_err(), "nothing before Ready");
    let pods = agent.source.health();
    let pods = pods.iter().find(|h| h.resource == "pods").unwrap();
    assert_eq!((pods.failures, pods.error.as_deref()), (2, None));

    server.release(Res::Namespaces);
    let seen = agent.until("Ready", |c| *c == Change::Ready).await;
    assert_eq!(seen, [Change::Ready]);
    let s = agent.snapshot();
    assert_eq!(services(&s), ["web"]);
    assert_eq!(names(&s.endpoint_slices), ["web-abcde"]);
    assert_eq!(names(&s.pods), ["web-1"]);
    assert_eq!(names(&s.namespaces), ["default"]);
    assert_eq!(names(&s.network_policies), ["allow-same-namespace"]);
    assert_eq!(
        s.node.as_ref().and_then(|n| n.metadata.name.as_deref()),
        Some(NODE)
    );
    // The Node is watched with a field selector: node-b is never listed.
    assert!(server
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/nodes?"))
        .all(|r| r.contains(&format!("fieldSelector=metadata.name={NODE}"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_list_is_reported_and_keeps_the_source_unready_until_it_lists() {
    let server = FakeApiServer::start().await;
    seed(&server);
    server.fail_lists(Res::NetworkPolicies, 403, 2);
    let dir = TempDir::new();
    // --master alone, as kube-router takes it.
    let c = client(None, Some(&server.url())).await.unwrap();
    let (tx, mut changes) = unbounded_channel();
    let source = KubeSource::start(c, NODE, tx);
    let policies = "networkpolicies.networking.k8s.io";
    until(&mut changes, "policies failing", |c| {
        is_health(c, policies, true)
    })
    .await;
    let failing = source.failing();
    assert!(
        failing.iter().any(|(r, e)| r == policies
            && e.contains("403")
            && e.contains("cannot list resource \"networkpolicies\"")),
        "{failing:?}"
    );
    assert!(source.snapshot(&host()).is_none());
    let seen = until(&mut changes, "Ready", |c| *c == Change::Ready).await;
    assert!(
        seen.iter().any(|c| is_health(c, policies, false)),
        "{seen:?}"
    );
    assert!(source.failing().is_empty());
    let h = source.health();
    let h = h.iter().find(|h| h.resource == policies).unwrap();
    assert_eq!(h.failures, 2);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_added_edited_and_deleted_reaches_the_snapshot_trimmed() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let mut agent = Agent::ready(&server).await;

    server.apply(Res::Services, svc("api", 81));
    agent
        .until("api added", |c| is_object(c, Kind::Service, "api"))
        .await;
    let s = agent.snapshot();
    assert_eq!(services(&s), ["api", "web"]);
    let api = &s.services[0];
    assert_eq!(api.spec.as_ref().unwrap().ports[0].port, 81);
    // Stored compact: what the controllers read, nothing else.
    let ann: Vec<&str> = api.metadata.annotations.iter().map(|(k, _)| k).collect();
    assert_eq!(ann, ["kube-router.io/service.scheduler"]);
    assert!(
        api.metadata.labels.is_empty(),
        "no label a controller reads"
    );
    assert!(s
        .node
        .as_ref()
        .unwrap()
        .status
        .as_ref()
        .unwrap()
        .images
        .is_none());

    // A change to nothing the controllers read reaches nobody: the next
    // change is the Service edit after it.
    let mut p = pod("web-1", "10.244.1.2");
    p["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    server.apply(Res::Pods, p);
    server.apply(Res::Services, svc("api", 82));
    let seen = agent
        .until("api edited", |c| is_object(c, Kind::Service, "api"))
        .await;
    assert_eq!(
        seen.len(),
        1,
        "the pod's status churn was dropped: {seen:?}"
    );
    let s = agent.snapshot();
    assert_eq!(s.services[0].spec.as_ref().unwrap().ports[0].port, 82);

    server.delete(Res::Services, "default", "api");
    agent
        .until("api deleted", |c| is_object(c, Kind::Service, "api"))
        .await;
    assert_eq!(services(&agent.snapshot()), ["web"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_collection_is_listed_in_pages_and_arrives_whole() {
    let server = FakeApiServer::start().await;
    seed(&server);
    // More than one page of the watcher's (500 items per list request).
    for i in 0..1201 {
        server.apply(Res::Pods, pod(&format!("p-{i:04}"), "10.244.3.3"));
    }
    let agent = Agent::ready(&server).await;
    assert_eq!(agent.snapshot().pods.len(), 1201 + 1);
    let pages: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/pods?") && !r.contains("watch=true"))
        .collect();
    assert!(
        pages.len() >= 3 && pages.iter().skip(1).all(|r| param(r, "continue").is_some()),
        "the pods were not listed in pages: {pages:?}"
    );
}

/// A paged relist never empties a kind in between: held after its first
/// page (500 of 1201 pods), the snapshot still holds every pod, the one
/// deleted meanwhile too; once the last page is in, exactly that one goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_relist_caught_between_pages_keeps_every_pod() {
    let server = FakeApiServer::start().await;
    seed(&server);
    for i in 0..1201 {
        server.apply(Res::Pods, pod(&format!("p-{i:04}"), "10.244.3.3"));
    }
    let mut agent = Agent::ready(&server).await;
    assert_eq!(agent.snapshot().pods.len(), 1201 + 1);

    server.set_down(true);
    server.delete(Res::Pods, "default", "p-0600");
    server.compact();
    server.hold_after_first_page(Res::Pods);
    let pages_before = server.requests().len();
    server.set_down(false);
    server
        .wait_request("a held second page of the pods relist", |_| {
            server.requests()[pages_before..].iter().any(|r| {
                r.starts_with("GET /api/v1/pods?")
                    && !r.contains("watch=true")
                    && param(r, "continue").is_some()
            })
        })
        .await;
    let between = agent.snapshot();
    assert_eq!(
        between.pods.len(),
        1201 + 1,
        "the relist emptied or shrank the pods before its last page"
    );

    server.release(Res::Pods);
    agent
        .until("pods relisted", |c| *c == Change::Relisted(Kind::Pod))
        .await;
    let after = agent.snapshot();
    assert_eq!(after.pods.len(), 1200 + 1);
    assert!(!names(&after.pods).contains(&"p-0600".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_watch_resumes_from_the_last_bookmark_without_a_relist() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let mut agent = Agent::ready(&server).await;

    let watches = |r: &str| r.starts_with("GET /api/v1/services?") && r.contains("watch=true");
    // The watch must be open before it can be dropped.
    server.wait_request("the services watch", watches).await;
    // Other kinds moved on; the bookmark tells the services watch so.
    let before = server.tick() - 1;
    let bookmark = server.bookmark(Res::Services);
    server.drop_watches(); // mid-chunk, after the bookmark was sent
    server
        .wait_request("the services watch resumed", |_| {
            server.requests().iter().filter(|r| watches(r)).count() >= 2
        })
        .await;
    // From the bookmark's resourceVersion when the client read it before
    // the connection broke, else from the last event's: a resume either way,
    // never a relist (checked below). Which one depends on where the
    // client's reads fall against the drop.
    let resumed_at = server
        .requests()
        .iter()
        .filter(|r| watches(r))
        .nth(1)
        .and_then(|r| param(r, "resourceVersion"))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        resumed_at == Some(bookmark) || resumed_at.is_some_and(|rv| rv <= before),
        "the watch resumed at {resumed_at:?}, not at the bookmark {bookmark} or an earlier version"
    );
    server.apply(Res::Services, svc("api", 81));
    let seen = agent
        .until("api added", |c| is_object(c, Kind::Service, "api"))
        .await;
    assert!(
        !seen.iter().any(|c| matches!(c, Change::Relisted(_))),
        "{seen:?}"
    );
    assert_eq!(services(&agent.snapshot()), ["api", "web"]);
    let requests = server.requests();
    let svc_requests: Vec<&String> = requests
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/services?"))
        .collect();
    assert_eq!(
        svc_requests
            .iter()
            .filter(|r| !r.contains("watch=true"))
            .count(),
        1,
        "one list, no relist: {svc_requests:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_gone_leaves_the_last_good_state_and_deletes_meanwhile_apply_after_the_relist() {
    let server = FakeApiServer::start().await;
    seed(&server);
    server.apply(Res::Services, svc("old", 81));
    let mut agent = Agent::ready(&server).await;
    let before = agent.snapshot();
    assert_eq!(services(&before), ["old", "web"]);

    server.set_down(true);
    let mut failing = BTreeSet::new();
    agent
        .until("every kind failing", |c| {
            if let Change::Health {
                resource,
                error: Some(_),
            } = c
            {
                failing.insert(resource.clone());
            }
            failing.len() == Kind::REQUIRED.len()
        })
        .await;
    // Everything stays in force while the server is gone.
    let during = agent.snapshot();
    assert_eq!(services(&during), ["old", "web"]);
    assert_eq!(names(&during.pods), ["web-1"]);
    assert_eq!(names(&during.network_policies), ["allow-same-namespace"]);
    assert!(during.node.is_some());
    assert_eq!(agent.source.failing().len(), Kind::REQUIRED.len());

    // Meanwhile `old` goes, `new` comes, and history is compacted: the
    // watches cannot resume (410) and must list again.
    server.delete(Res::Services, "default", "old");
    server.apply(Res::Services, svc("new", 82));
    server.compact();
    server.set_down(false);
    let seen = agent
        .until("services relisted", |c| {
            *c == Change::Relisted(Kind::Service)
        })
        .await;
    assert!(
        seen.iter().any(|c| is_health(c, "services", false)),
        "{seen:?}"
    );
    assert_eq!(services(&agent.snapshot()), ["new", "web"]);
    let lists = server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/services?") && !r.contains("watch=true"))
        .count();
    assert_eq!(lists, 2, "listed, then listed again after the 410");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_that_fails_keeps_the_last_good_content_until_it_succeeds() {
    let server = FakeApiServer::start().await;
    seed(&server);
    server.apply(Res::Services, svc("old", 81));
    let mut agent = Agent::ready(&server).await;

    // `old` goes while the server is away: the watch cannot tell.
    server.set_down(true);
    server.delete(Res::Services, "default", "old");
    server.compact();
    server.fail_lists(Res::Services, 500, 1);
    server.hold_lists(Res::Services); // the retry waits
    server.set_down(false);
    agent
        .until("the services relist failing", |c| {
            matches!(c, Change::Health { resource, error: Some(e) }
                if resource == "services" && e.contains("etcdserver"))
        })
        .await;
    server
        .wait_request("the services relist retried", |_| {
            let lists = server
                .requests()
                .into_iter()
                .filter(|r| r.starts_with("GET /api/v1/services?") && !r.contains("watch=true"))
                .count();
            lists == 3 // the first list, the failed relist, the held retry
        })
        .await;
    // The relist failed: `old` (deleted upstream) stays until one succeeds.
    assert_eq!(services(&agent.snapshot()), ["old", "web"]);

    server.release(Res::Services);
    let seen = agent
        .until("services relisted", |c| {
            *c == Change::Relisted(Kind::Service)
        })
        .await;
    assert!(
        seen.iter().any(|c| is_health(c, "services", false)),
        "{seen:?}"
    );
    assert_eq!(services(&agent.snapshot()), ["web"]);
}

fn is_unreadable(c: &Change, object: &str) -> bool {
    matches!(c, Change::Health { resource, error: Some(_) } if resource == object)
}

/// A policy whose port is written `{name: http}` (a type error).
fn typo(mut policy: Value) -> Value {
    policy["spec"]["ingress"][0]["ports"] = json!([{"protocol": "TCP", "port": {"name": "http"}}]);
    policy
}

fn ports(s: &Snapshot, name: &str) -> Vec<i32> {
    let svc = s.services.iter().find(|o| o.metadata.name() == name);
    let spec = svc.and_then(|o| o.spec.clone()).unwrap_or_default();
    spec.ports.iter().map(|p| p.port).collect()
}

fn policy_spec(s: &Snapshot, name: &str) -> k8s_openapi::api::networking::v1::NetworkPolicySpec {
    let p = s
        .network_policies
        .iter()
        .find(|o| o.metadata.name.as_deref() == Some(name));
    p.and_then(|o| o.spec.clone())
        .unwrap_or_else(|| panic!("no policy {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_object_keeps_its_last_good_version_and_a_policy_never_read_denies_all() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let mut bad = svc("bad", 80);
    bad["spec"]["ports"][0]["port"] = json!("eighty");
    server.apply(Res::Services, bad);
    server.apply(Res::Services, svc("api", 81));
    server.apply(Res::NetworkPolicies, typo(policy("new-typo")));
    let mut agent = Agent::start(&server).await;
    let seen = agent.until("Ready", |c| *c == Change::Ready).await;
    assert!(
        seen.iter()
            .any(|c| is_unreadable(c, "NetworkPolicy default/new-typo")),
        "{seen:?}"
    );
    let snap = agent.snapshot();
    assert_eq!(
        services(&snap),
        ["api", "web"],
        "a new unreadable Service is not programmed"
    );
    // Never read: every pod of its namespace isolated both ways, nothing allowed.
    let deny = policy_spec(&snap, "new-typo");
    assert_eq!(deny.pod_selector, Some(Default::default()));
    assert_eq!(
        deny.policy_types.as_deref(),
        Some(&["Ingress".to_string(), "Egress".to_string()][..])
    );
    assert!(deny.ingress.is_none() && deny.egress.is_none());
    let unreadable: Vec<(String, String)> = agent
        .source
        .unreadable()
        .iter()
        .map(|u| (u.object(), u.error.clone()))
        .collect();
    assert_eq!(unreadable.len(), 2, "{unreadable:?}");
    assert!(
        unreadable
            .iter()
            .any(|(o, e)| o == "NetworkPolicy default/new-typo"
                && e.starts_with("field spec.ingress[0].ports[0].port")),
        "{unreadable:?}"
    );
    assert!(unreadable
        .iter()
        .any(|(o, e)| o == "Service default/bad" && e.contains("spec.ports[0].port")));

    // An edit that makes `web` and the seeded policy unreadable keeps both
    // at their last good version.
    let mut broken = svc("web", 80);
    broken["spec"]["ports"] = json!("all of them");
    server.apply(Res::Services, broken);
    server.apply(Res::NetworkPolicies, typo(policy("allow-same-namespace")));
    let (mut web_seen, mut policy_seen) = (false, false);
    agent
        .until("web and the policy unreadable", |c| {
            web_seen |= is_unreadable(c, "Service default/web");
            policy_seen |= is_unreadable(c, "NetworkPolicy default/allow-same-namespace");
            web_seen && policy_seen
        })
        .await;
    let snap = agent.snapshot();
    assert_eq!(ports(&snap, "web"), [80]);
    let kept = policy_spec(&snap, "allow-same-namespace");
    assert_eq!(kept.ingress.unwrap().len(), 1, "the last good rules stay");

    // Fixed: the new versions apply and the problems clear.
    server.apply(Res::Services, svc("web", 82));
    server.apply(Res::NetworkPolicies, policy("new-typo"));
    // The two kinds are watched by separate tasks: either may come first.
    let (mut web_fixed, mut policy_fixed) = (false, false);
    agent
        .until("web and new-typo fixed", |c| {
            web_fixed |= is_object(c, Kind::Service, "web");
            policy_fixed |= is_object(c, Kind::NetworkPolicy, "new-typo");
            web_fixed && policy_fixed
        })
        .await;
    let snap = agent.snapshot();
    assert_eq!(ports(&snap, "web"), [82]);
    assert!(policy_spec(&snap, "new-typo").ingress.is_some());
    let left: Vec<String> = agent
        .source
        .unreadable()
        .iter()
        .map(|u| u.object())
        .collect();
    assert_eq!(
        left,
        [
            "Service default/bad",
            "NetworkPolicy default/allow-same-namespace"
        ]
    );
}

/// A skipped object reaches its owner as `kubectl describe` shows it: a
/// Warning Event (events.k8s.io/v1) regarding it, naming the field; the
/// same failure again soon after posts nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_policy_gets_one_warning_event_naming_it_and_the_field() {
    let server = FakeApiServer::start().await;
    seed(&server);
    server.apply(Res::NetworkPolicies, typo(policy("new-typo")));
    let mut agent = Agent::start(&server).await;
    agent.until("Ready", |c| *c == Change::Ready).await;
    let events = server.wait_posted_events("Warning on new-typo", 1).await;
    let e = &events[0];
    assert_eq!(e["type"], "Warning", "{e}");
    assert_eq!(e["reason"], "Unreadable", "{e}");
    assert_eq!(e["action"], "DenyAll", "{e}");
    assert_eq!(e["reportingController"], "ipwarden", "{e}");
    assert_eq!(e["reportingInstance"], format!("ipwarden-{NODE}"), "{e}");
    assert_eq!(e["metadata"]["namespace"], "default", "{e}");
    let regarding = &e["regarding"];
    assert_eq!(regarding["apiVersion"], "networking.k8s.io/v1", "{e}");
    assert_eq!(regarding["kind"], "NetworkPolicy", "{e}");
    assert_eq!(regarding["namespace"], "default", "{e}");
    assert_eq!(regarding["name"], "new-typo", "{e}");
    assert!(regarding["uid"].is_string(), "{e}");
    let note = e["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with(
            "NetworkPolicy default/new-typo cannot be read (field spec.ingress[0].ports[0].port"
        ),
        "{note}"
    );

    // Fixed, then broken the same way again: reported, but no new Event.
    server.apply(Res::NetworkPolicies, policy("new-typo"));
    agent
        .until("new-typo reads", |c| {
            is_object(c, Kind::NetworkPolicy, "new-typo")
        })
        .await;
    server.apply(Res::NetworkPolicies, typo(policy("new-typo")));
    agent
        .until("new-typo unreadable again", |c| {
            is_unreadable(c, "NetworkPolicy default/new-typo")
        })
        .await;
    // Events leave in order through one queue: once another object's is
    // in, a second one for new-typo would have been too.
    server.apply(Res::NetworkPolicies, typo(policy("other-typo")));
    let events = server.wait_posted_events("Warning on other-typo", 2).await;
    let regarding: Vec<&str> = events
        .iter()
        .filter_map(|e| e["regarding"]["name"].as_str())
        .collect();
    assert_eq!(regarding.len(), 2, "{events:?}");
    assert!(regarding.contains(&"other-typo"), "{events:?}");
    assert!(
        !server.requests().iter().any(|r| r.starts_with("PATCH ")),
        "no series update either: {:?}",
        server.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_node_keeps_the_source_without_a_snapshot_and_says_so() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let dir = TempDir::new();
    let c = client(Some(&server.kubeconfig(&dir.0)), None)
        .await
        .unwrap();
    let (tx, mut changes) = unbounded_channel();
    let source = KubeSource::start(c, "no-such-node", tx);
    until(&mut changes, "Ready", |c| *c == Change::Ready).await;
    let host = HostInfo {
        node_name: "no-such-node".into(),
        local_addresses: vec![],
    };
    assert!(source.snapshot(&host).is_none(), "nothing is programmed");
    let failing = source.failing();
    assert!(
        failing
            .iter()
            .any(|(r, e)| r == "nodes" && e.contains("no Node named \"no-such-node\"")),
        "{failing:?}"
    );
    server.apply(Res::Nodes, node("no-such-node"));
    until(&mut changes, "the Node", |c| {
        is_object(c, Kind::Node, "no-such-node")
    })
    .await;
    assert!(source.snapshot(&host).is_some());
    assert!(source.failing().is_empty(), "{:?}", source.failing());
}

/// The API server answers every list with 500 for 40 s: list attempts
/// back off (0.8 s doubling, jittered, at most 30 s) instead of once a
/// second. Counted from the server's request log; the window is what the
/// test measures, not a synchronisation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_retries_back_off_while_the_server_fails() {
    const WINDOW: Duration = Duration::from_secs(40);
    let server = FakeApiServer::start().await;
    seed(&server);
    server.fail_lists(Res::Services, 500, 1000);
    let agent = Agent::start(&server).await;
    tokio::time::sleep(WINDOW).await;
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.contains("/api/v1/services") && !r.contains("watch=true"))
        .count();
    // Without backoff about 40; with it, the gaps sum 0.8 + 1.6 + 3.2 +
    // 6.4 + 12.8 + 15 = 39.8 s at the least: at most 7 attempts.
    assert!(
        (3..=7).contains(&lists),
        "{lists} list attempts in {WINDOW:?}"
    );
    assert!(agent.source.snapshot(&host()).is_none());
    let h = agent.source.health();
    let h = h.iter().find(|h| h.resource == "services").unwrap();
    assert_eq!(h.failures as usize, lists);
}

// The manifests source.

const GOOD_A: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
    spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}\n---\n\
    apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n";
const GOOD_B: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: default}\n\
    spec: {clusterIP: 10.96.0.11, ports: [{port: 81}]}\n";

/// Replaces a file at once (write aside, rename), as kubectl and ConfigMap
/// volumes do: the source never reads it half written.
fn write(path: &Path, text: impl AsRef<[u8]>) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_manifest_keeps_its_last_good_content_and_a_fix_is_picked_up_through_inotify() {
    let dir = TempDir::new();
    let (a, b) = (dir.0.join("a.yaml"), dir.0.join("b.yaml"));
    write(&a, GOOD_A);
    write(&b, GOOD_B);
    let (tx, mut changes) = unbounded_channel();
    let source = ManifestsSource::start(&dir.0, tx).unwrap();
    assert_eq!(changes.try_recv().unwrap(), Change::Ready);
    let snap = || source.snapshot(&host()).unwrap();
    assert_eq!(services(&snap()), ["api", "web"]);
    let a_name = std::fs::canonicalize(&a).unwrap().display().to_string();

    // Truncated mid-document.
    write(
        &a,
        &GOOD_A[..GOOD_A.find("namespace: default}").unwrap() + 14],
    );
    until(&mut changes, "a.yaml failing", |c| {
        is_health(c, &a_name, true)
    })
    .await;
    assert_eq!(services(&snap()), ["api", "web"]);
    assert_eq!(names(&snap().namespaces), ["default"]);
    let failing = source.failing();
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert_eq!(failing[0].0, a_name);

    // Replaced by garbage (not even text).
    write(&a, [0xff, 0xfe, 0x00, b'{', b'[']);
    until(&mut changes, "a.yaml failing again", |c| {
        matches!(c, Change::Health { resource, error: Some(e) } if *resource == a_name && e.contains("UTF-8"))
    })
    .await;
    assert_eq!(services(&snap()), ["api", "web"]);

    // Replaced by text that is YAML but no object.
    write(&a, "just some words\n");
    until(&mut changes, "a.yaml failing on garbage text", |c| {
        matches!(c, Change::Health { resource, error: Some(e) } if *resource == a_name && e.contains("kind"))
    })
    .await;
    assert_eq!(services(&snap()), ["api", "web"]);

    // Fixed, with `web` renamed `shop`.
    write(&a, GOOD_A.replace("name: web", "name: shop"));
    let seen = until(&mut changes, "shop added", |c| {
        is_object(c, Kind::Service, "shop")
    })
    .await;
    assert!(
        seen.iter().any(|c| is_health(c, &a_name, false)),
        "{seen:?}"
    );
    // Changes are sent once the file is read, in key order: web may follow.
    let mut all = seen;
    if !all.iter().any(|c| is_object(c, Kind::Service, "web")) {
        all.extend(
            until(&mut changes, "web removed", |c| {
                is_object(c, Kind::Service, "web")
            })
            .await,
        );
    }
    assert_eq!(services(&snap()), ["api", "shop"]);
    assert!(source.failing().is_empty());
    let h = source.health();
    let h = h.iter().find(|h| h.resource == a_name).unwrap();
    assert!(h.failures >= 3, "{h:?}");

    // A file removed is content removed, not a failure.
    std::fs::remove_file(&b).unwrap();
    until(&mut changes, "api removed", |c| {
        is_object(c, Kind::Service, "api")
    })
    .await;
    assert_eq!(services(&snap()), ["shop"]);
    assert!(source.failing().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_never_parsed_keeps_the_source_unready_until_it_does() {
    let dir = TempDir::new();
    let (a, b) = (dir.0.join("a.yaml"), dir.0.join("b.yaml"));
    write(&a, "apiVersion: v1\nkind: Service\nmetadata: {name: web");
    write(&b, GOOD_B);
    let (tx, mut changes) = unbounded_channel();
    let source = ManifestsSource::start(&dir.0, tx).unwrap();
    let first = changes.try_recv().unwrap();
    assert!(
        matches!(&first, Change::Health { error: Some(_), .. }),
        "{first:?}"
    );
    assert!(
        source.snapshot(&host()).is_none(),
        "b.yaml alone is not the cluster"
    );
    write(&a, GOOD_A);
    until(&mut changes, "Ready", |c| *c == Change::Ready).await;
    assert_eq!(services(&source.snapshot(&host()).unwrap()), ["api", "web"]);
}

const POLICY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
    metadata: {name: allow-web, namespace: shop}\n\
    spec:\n  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]\n\
    \x20 ingress:\n  - ports: [{protocol: TCP, port: http}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_object_that_stops_reading_keeps_its_last_good_version_per_document() {
    let dir = TempDir::new();
    let (a, b) = (dir.0.join("a.yaml"), dir.0.join("b.yaml"));
    write(&a, format!("{GOOD_A}---\n{POLICY}"));
    write(&b, GOOD_B);
    let (tx, mut changes) = unbounded_channel();
    let source = ManifestsSource::start(&dir.0, tx).unwrap();
    assert_eq!(changes.try_recv().unwrap(), Change::Ready);
    let snap = || source.snapshot(&host()).unwrap();

    // The port written `{name: http}`, and a second policy as new and as
    // broken: the file parses, those two documents do not.
    let typo = POLICY.replace("port: http", "port: {name: http}");
    let new_typo = typo.replace("allow-web", "new-typo");
    write(&a, format!("{GOOD_A}---\n{typo}---\n{new_typo}"));
    until(&mut changes, "new-typo", |c| {
        is_object(c, Kind::NetworkPolicy, "new-typo")
    })
    .await;
    let s = snap();
    assert_eq!(services(&s), ["api", "web"], "the rest of the file applies");
    let kept = policy_spec(&s, "allow-web");
    assert_eq!(
        kept.ingress.unwrap().len(),
        1,
        "its last good version stays"
    );
    let deny = policy_spec(&s, "new-typo");
    assert_eq!(deny.pod_selector, Some(Default::default()));
    assert!(deny.ingress.is_none() && deny.egress.is_none());
    let unreadable = source.unreadable();
    assert_eq!(unreadable.len(), 2, "{unreadable:?}");
    assert!(
        unreadable[0]
            .error
            .contains("document 3: field spec.ingress[0].ports[0].port"),
        "{unreadable:?}"
    );
    assert_eq!(unreadable[0].object(), "NetworkPolicy shop/allow-web");

    // The file rewritten again with the same typo: still the last good one
    // (not a stand-in for the stand-in).
    write(&a, format!("{typo}---\n{GOOD_A}"));
    until(&mut changes, "new-typo removed", |c| {
        is_object(c, Kind::NetworkPolicy, "new-typo")
    })
    .await;
    assert_eq!(policy_spec(&snap(), "allow-web").ingress.unwrap().len(), 1);

    // Fixed: the problems clear.
    write(&a, format!("{GOOD_A}---\n{POLICY}"));
    until(&mut changes, "allow-web reads", |c| {
        is_health(c, "NetworkPolicy shop/allow-web", false)
    })
    .await;
    assert!(source.unreadable().is_empty());
    assert_eq!(names(&snap().network_policies), ["allow-web"]);
}

/// `--master 127.0.0.1:PORT`, as client-go users write it: https:// is put
/// in front, so the plain-HTTP fake server fails the TLS handshake, which
/// is reported as a failing list (the kube client panicked in a task
/// before, and nothing was ever reported).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_without_a_scheme_is_read_as_https() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let hostport = server.url().trim_start_matches("http://").to_string();
    let c = client(None, Some(&hostport)).await.unwrap();
    let (tx, mut changes) = unbounded_channel();
    let source = KubeSource::start(c, NODE, tx);
    until(&mut changes, "services failing", |c| {
        is_health(c, "services", true)
    })
    .await;
    let failing = source.failing();
    assert!(failing.iter().any(|(r, _)| r == "services"), "{failing:?}");
    assert!(source.snapshot(&host()).is_none());
}

/// Polls `cond` every 20 ms until it holds (at most WAIT).
async fn poll_until(what: &str, mut cond: impl FnMut() -> bool) {
    let found = tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "timed out waiting for {what}");
}

/// `kubectl get -o yaml > a.yaml`: the shell truncates the file, then the
/// text arrives. A read in between must not empty the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_for_a_rewrite_in_place_is_held_at_its_last_good_content() {
    let dir = TempDir::new();
    let a = dir.0.join("a.yaml");
    write(&a, GOOD_A);
    let a_name = std::fs::canonicalize(&a).unwrap().display().to_string();
    let held = |source: &ManifestsSource| {
        source
            .health()
            .iter()
            .find(|h| h.resource == a_name)
            .map_or(0, |h| h.held_shrinks)
    };
    // A hold longer than the test: what is seen is the hold, not a timing.
    let (tx, mut changes) = unbounded_channel();
    let source = ManifestsSource::start_holding(&dir.0, tx, Duration::from_secs(3600)).unwrap();
    assert_eq!(changes.try_recv().unwrap(), Change::Ready);
    std::fs::File::create(&a).unwrap();
    poll_until("the empty read held", || held(&source) == 1).await;
    assert_eq!(services(&source.snapshot(&host()).unwrap()), ["web"]);
    assert_eq!(source.failing(), vec![], "a held read is not a failure");
    // The rest of the rewrite lands: taken at once.
    std::fs::write(&a, GOOD_A.replace("name: web", "name: shop")).unwrap();
    until(&mut changes, "shop", |c| {
        is_object(c, Kind::Service, "shop")
    })
    .await;
    assert_eq!(services(&source.snapshot(&host()).unwrap()), ["shop"]);
    drop(source);

    // Emptied on purpose: believed once it has read empty for the hold.
    let (tx, mut changes) = unbounded_channel();
    let source = ManifestsSource::start_holding(&dir.0, tx, Duration::from_millis(200)).unwrap();
    assert_eq!(changes.try_recv().unwrap(), Change::Ready);
    std::fs::File::create(&a).unwrap();
    until(&mut changes, "shop removed", |c| {
        is_object(c, Kind::Service, "shop")
    })
    .await;
    assert!(services(&source.snapshot(&host()).unwrap()).is_empty());
    assert_eq!(held(&source), 1, "held first, then believed");
}

fn cluster_policy(name: &str, priority: i32, action: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {"tier": "Admin", "priority": priority,
            "subject": {"namespaces": {}},
            "egress": [{"name": "imds", "action": action,
                "to": [{"networks": ["169.254.169.254/32"]}]}]}
    })
}

/// ClusterNetworkPolicy is a CRD: absent at start, the source is Ready
/// without it and reports nothing failing; once installed, its first list
/// arrives as Relisted (a full policy sync), an edit as a change, and an
/// unreadable one is reported by name and field and left out while the
/// others apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_network_policies_are_picked_up_once_their_crd_is_installed() {
    let server = FakeApiServer::start().await;
    server.apply(Res::Nodes, node(NODE));
    let dir = TempDir::new();
    let c = client(Some(&server.kubeconfig(&dir.0)), None)
        .await
        .unwrap();
    let (tx, mut changes) = unbounded_channel();
    let source = KubeSource::start_polling_crds(c, NODE, tx, Duration::from_millis(200));
    until(&mut changes, "Ready", |c| *c == Change::Ready).await;
    assert!(source.failing().is_empty(), "{:?}", source.failing());
    let s = source.snapshot(&host()).unwrap();
    assert!(s.cluster_network_policies.is_empty());
    let path = Res::ClusterNetworkPolicies.path();
    assert!(
        server.requests().iter().any(|r| r.contains(path)),
        "the CRD was looked for"
    );

    server.apply(
        Res::ClusterNetworkPolicies,
        cluster_policy("deny-imds", 10, "Deny"),
    );
    server.apply(
        Res::ClusterNetworkPolicies,
        cluster_policy("typo", 1, "Allow"),
    );
    server.install_crd();
    let kind = Kind::ClusterNetworkPolicy;
    until(&mut changes, "the first list", |c| {
        *c == Change::Relisted(kind)
    })
    .await;
    let s = source.snapshot(&host()).unwrap();
    assert_eq!(names(&s.cluster_network_policies), ["deny-imds"]);
    let unreadable = source.unreadable();
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert_eq!(unreadable[0].name, "typo");
    assert!(
        unreadable[0].error.contains("spec.egress[0].action"),
        "{unreadable:?}"
    );

    server.apply(
        Res::ClusterNetworkPolicies,
        cluster_policy("deny-imds", 20, "Deny"),
    );
    until(&mut changes, "the edit", |c| {
        is_object(c, kind, "deny-imds")
    })
    .await;
    let s = source.snapshot(&host()).unwrap();
    assert_eq!(s.cluster_network_policies[0].spec.priority, 20);
}

/// Installed at start: Ready waits for its first list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_crd_is_listed_before_ready() {
    let server = FakeApiServer::start().await;
    server.apply(Res::Nodes, node(NODE));
    server.install_crd();
    server.apply(
        Res::ClusterNetworkPolicies,
        cluster_policy("deny-imds", 10, "Deny"),
    );
    let mut agent = Agent::start(&server).await;
    agent.until("Ready", |c| *c == Change::Ready).await;
    let s = agent.snapshot();
    assert_eq!(names(&s.cluster_network_policies), ["deny-imds"]);
}
