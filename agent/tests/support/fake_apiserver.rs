//! A fake kube-apiserver on loopback, for driving the real kube client.
//!
//! It speaks HTTP/1.1 on a plain tokio `TcpListener` and answers as a real
//! API server writes: lists (`<Kind>List`, `metadata.resourceVersion`,
//! items without apiVersion/kind), watches as chunked newline-delimited
//! `{"type": ..., "object": ...}` events from a resourceVersion, BOOKMARKs,
//! an `ERROR` event with a `410 Expired` Status for a compacted
//! resourceVersion, `Status` objects for 403/500 answers, and Events
//! (events.k8s.io/v1) created and merge-patched. Every object
//! carries what a real server adds (uid, resourceVersion,
//! creationTimestamp, managedFields).
//!
//! The test scripts it: objects added, edited and deleted (each one bumps
//! one resourceVersion shared by all kinds, as etcd's), bookmarks, list
//! failures, held lists, watches dropped mid-chunk, the server gone (every
//! connection dropped) and back, compaction. It records each request.
#![allow(dead_code)] // each test uses a different part

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{tcp::OwnedWriteHalf, TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// The collections the agent watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Res {
    Services,
    EndpointSlices,
    Pods,
    Namespaces,
    NetworkPolicies,
    Nodes,
    /// A CRD: served only once `install_crd` was called (404 before).
    ClusterNetworkPolicies,
}

impl Res {
    pub const ALL: [Res; 6] = [
        Res::Services,
        Res::EndpointSlices,
        Res::Pods,
        Res::Namespaces,
        Res::NetworkPolicies,
        Res::Nodes,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Res::Services => "/api/v1/services",
            Res::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            Res::Pods => "/api/v1/pods",
            Res::Namespaces => "/api/v1/namespaces",
            Res::NetworkPolicies => "/apis/networking.k8s.io/v1/networkpolicies",
            Res::Nodes => "/api/v1/nodes",
            Res::ClusterNetworkPolicies => {
                "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies"
            }
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Res::Services => "Service",
            Res::EndpointSlices => "EndpointSlice",
            Res::Pods => "Pod",
            Res::Namespaces => "Namespace",
            Res::NetworkPolicies => "NetworkPolicy",
            Res::Nodes => "Node",
            Res::ClusterNetworkPolicies => "ClusterNetworkPolicy",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Res::EndpointSlices => "discovery.k8s.io/v1",
            Res::NetworkPolicies => "networking.k8s.io/v1",
            Res::ClusterNetworkPolicies => "policy.networking.k8s.io/v1alpha2",
            _ => "v1",
        }
    }

    /// The resource as RBAC names it, for Forbidden messages.
    fn resource(self) -> (&'static str, &'static str) {
        match self {
            Res::Services => ("services", ""),
            Res::EndpointSlices => ("endpointslices", "discovery.k8s.io"),
            Res::Pods => ("pods", ""),
            Res::Namespaces => ("namespaces", ""),
            Res::NetworkPolicies => ("networkpolicies", "networking.k8s.io"),
            Res::Nodes => ("nodes", ""),
            Res::ClusterNetworkPolicies => ("clusternetworkpolicies", "policy.networking.k8s.io"),
        }
    }

    fn from_path(path: &str) -> Option<Res> {
        Res::ALL
            .into_iter()
            .chain([Res::ClusterNetworkPolicies])
            .find(|r| r.path() == path)
    }
}

type Key = (String, String); // namespace ("" when cluster-scoped), name

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    kind: &'static str, // ADDED, MODIFIED, DELETED, BOOKMARK
    object: Value,
}

/// An object as stored, with its list item written once, as the API
/// server's watch cache keeps each object's serialization: a list then
/// copies bytes instead of cloning and encoding every object again (in the
/// agent bench's VM, that encoding shared the CPU with the agent under
/// test).
struct Stored {
    object: Value,
    item: Vec<u8>,
}

impl Stored {
    fn new(object: Value) -> Stored {
        let item = serde_json::to_vec(&list_item(&object)).unwrap();
        Stored { object, item }
    }
}

#[derive(Default)]
struct Collection {
    objects: BTreeMap<Key, Stored>,
    events: Vec<Event>,
    /// Status codes the next list requests are answered with.
    list_failures: VecDeque<u16>,
    /// Lists wait while this is set.
    held: bool,
    /// Pages after a list's first (requests with a `continue` token) wait
    /// while this is set.
    held_after_first_page: bool,
}

#[derive(Default)]
struct State {
    /// The last resourceVersion given out (one counter for every kind).
    rv: u64,
    /// Watches from below this resourceVersion get `410 Expired`.
    compacted: u64,
    collections: HashMap<Res, Collection>,
    requests: Vec<String>,
    /// While set, every connection is dropped at once.
    down: bool,
    /// The ClusterNetworkPolicy CRD is installed.
    crd_installed: bool,
    /// Bumped to drop every open watch mid-chunk, once it has sent what
    /// happened up to `kill_rv`.
    kill: u64,
    kill_rv: u64,
    /// Events (events.k8s.io/v1) created by the client, by namespace and name.
    posted_events: BTreeMap<Key, Value>,
    /// When each event was first written to a watch, by resourceVersion
    /// (a bench times the agent from there).
    sent_at: HashMap<u64, std::time::SystemTime>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every change, to wake watches and held lists.
    bell: watch::Sender<u64>,
}

impl Shared {
    fn ring(&self) {
        self.bell.send_modify(|n| *n += 1);
    }
}

pub struct FakeApiServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    /// Listens on 127.0.0.1 (a free port), empty, at resourceVersion 1.
    pub async fn start() -> FakeApiServer {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// Serves on `listener` (bound, say, in another network namespace).
    pub fn start_on_std(listener: std::net::TcpListener) -> FakeApiServer {
        listener.set_nonblocking(true).unwrap();
        Self::start_on(TcpListener::from_std(listener).unwrap())
    }

    fn start_on(listener: TcpListener) -> FakeApiServer {
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 1,
                ..State::default()
            }),
            bell: watch::channel(0).0,
        });
        let accept = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if accept.state.lock().unwrap().down {
                    drop(stream);
                    continue;
                }
                tokio::spawn(connection(stream, accept.clone()));
            }
        });
        FakeApiServer { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: agent\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: agent\n\
             current-context: fake\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.shared.state.lock().unwrap());
        self.shared.ring();
        out
    }

    /// Creates or replaces an object (`metadata.name`, and
    /// `metadata.namespace` for namespaced kinds); returns its
    /// resourceVersion.
    pub fn apply(&self, res: Res, object: Value) -> u64 {
        self.with(|st| {
            st.rv += 1;
            let rv = st.rv;
            let key = key_of(&object);
            let coll = st.collections.entry(res).or_default();
            let old = coll.objects.get(&key).map(|s| s.object.clone());
            let object = as_served(res, object, rv, old.as_ref());
            coll.objects.insert(key, Stored::new(object.clone()));
            coll.events.push(Event {
                rv,
                kind: if old.is_some() { "MODIFIED" } else { "ADDED" },
                object,
            });
            rv
        })
    }

    /// Deletes an object; panics if there is none.
    pub fn delete(&self, res: Res, namespace: &str, name: &str) -> u64 {
        self.with(|st| {
            st.rv += 1;
            let rv = st.rv;
            let coll = st.collections.entry(res).or_default();
            let mut object = coll
                .objects
                .remove(&(namespace.to_string(), name.to_string()))
                .unwrap_or_else(|| panic!("no {res:?} {namespace}/{name}"))
                .object;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            coll.events.push(Event {
                rv,
                kind: "DELETED",
                object,
            });
            rv
        })
    }

    /// Sends a BOOKMARK at the current resourceVersion to `res`'s watches;
    /// returns that resourceVersion.
    pub fn bookmark(&self, res: Res) -> u64 {
        self.with(|st| {
            let rv = st.rv;
            st.collections.entry(res).or_default().events.push(Event {
                rv,
                kind: "BOOKMARK",
                object: json!({
                    "kind": res.kind(),
                    "apiVersion": res.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()},
                }),
            });
            rv
        })
    }

    /// Bumps the resourceVersion without touching any object the agent
    /// watches (another kind changed), so a bookmark carries news.
    pub fn tick(&self) -> u64 {
        self.with(|st| {
            st.rv += 1;
            st.rv
        })
    }

    /// Forgets history: a watch from an older resourceVersion than now
    /// gets `410 Expired` and must list again.
    pub fn compact(&self) {
        self.with(|st| st.compacted = st.rv);
    }

    /// Answers the next `times` lists of `res` with `code`.
    pub fn fail_lists(&self, res: Res, code: u16, times: usize) {
        self.with(|st| {
            let coll = st.collections.entry(res).or_default();
            coll.list_failures.extend(std::iter::repeat_n(code, times));
        });
    }

    /// Lists of `res` wait until [`FakeApiServer::release`].
    pub fn hold_lists(&self, res: Res) {
        self.with(|st| st.collections.entry(res).or_default().held = true);
    }

    pub fn release(&self, res: Res) {
        self.with(|st| {
            let coll = st.collections.entry(res).or_default();
            coll.held = false;
            coll.held_after_first_page = false;
        });
    }

    /// Lists of `res` are answered with their first page, and the next
    /// pages wait until [`FakeApiServer::release`]: a relist caught between
    /// two pages.
    pub fn hold_after_first_page(&self, res: Res) {
        self.with(|st| st.collections.entry(res).or_default().held_after_first_page = true);
    }

    /// Drops every open watch in the middle of a chunk, after the events
    /// recorded so far (a test knows what the client saw).
    pub fn drop_watches(&self) {
        self.with(|st| {
            st.kill += 1;
            st.kill_rv = st.rv;
        });
    }

    /// Gone: every open watch is dropped (after the events recorded so
    /// far), and every request and new connection is closed at once.
    /// `false` brings the server back.
    /// Serves ClusterNetworkPolicies from now on.
    pub fn install_crd(&self) {
        self.shared.state.lock().unwrap().crd_installed = true;
    }

    pub fn set_down(&self, down: bool) {
        self.with(|st| {
            if down && !st.down {
                st.kill += 1;
                st.kill_rv = st.rv;
            }
            st.down = down;
        });
    }

    /// When the event of resourceVersion `rv` was first written to a
    /// watch; None while no watch has sent it.
    pub fn sent_at(&self, rv: u64) -> Option<std::time::SystemTime> {
        self.shared.state.lock().unwrap().sent_at.get(&rv).copied()
    }

    /// The Events the client created (events.k8s.io/v1), as stored.
    pub fn posted_events(&self) -> Vec<Value> {
        let st = self.shared.state.lock().unwrap();
        st.posted_events.values().cloned().collect()
    }

    /// Waits until the client has created `n` Events; returns them.
    pub async fn wait_posted_events(&self, what: &str, n: usize) -> Vec<Value> {
        let mut bell = self.shared.bell.subscribe();
        let wait = async {
            loop {
                bell.borrow_and_update();
                let events = self.posted_events();
                if events.len() >= n {
                    return events;
                }
                bell.changed().await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {what}: {} Events created, requests:\n{}",
                    self.posted_events().len(),
                    self.requests().join("\n")
                )
            })
    }

    /// "GET /api/v1/services?..." for every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// Waits until a request matching `pred` has arrived.
    pub async fn wait_request(&self, what: &str, pred: impl Fn(&str) -> bool) {
        self.wait_request_within(what, Duration::from_secs(20), pred)
            .await;
    }

    /// Waits at most `within` until a request matching `pred` has arrived.
    pub async fn wait_request_within(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) {
        let mut bell = self.shared.bell.subscribe();
        let wait = async {
            loop {
                bell.borrow_and_update();
                if self.requests().iter().any(|r| pred(r)) {
                    return;
                }
                bell.changed().await.unwrap();
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no request {what} within {within:?}; requests:\n{}",
                    self.requests().join("\n")
                )
            });
    }
}

fn key_of(object: &Value) -> Key {
    let m = &object["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().expect("metadata.name").to_string(),
    )
}

/// The object as the server stores and sends it.
fn as_served(res: Res, mut object: Value, rv: u64, old: Option<&Value>) -> Value {
    object["apiVersion"] = json!(res.api_version());
    object["kind"] = json!(res.kind());
    let m = object["metadata"].as_object_mut().expect("metadata");
    let uid = old
        .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("00000000-0000-4000-8000-{rv:012}"));
    m.insert("uid".into(), json!(uid));
    m.insert("resourceVersion".into(), json!(rv.to_string()));
    m.insert("creationTimestamp".into(), json!("2026-11-29T10:00:00Z"));
    m.insert(
        "managedFields".into(),
        json!([{
            "manager": "kubectl-client-side-apply",
            "operation": "Update",
            "apiVersion": res.api_version(),
            "time": "2026-11-29T10:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}, "f:spec": {"f:ports": {}}}
        }]),
    );
    object
}

/// The API server's Status for an error answer.
fn status(code: u16, reason: &str, message: &str, res: Option<Res>) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(res) = res {
        let (resource, group) = res.resource();
        s["details"] = json!({"group": group, "kind": resource});
    }
    s
}

fn error_status(code: u16, res: Res) -> Value {
    let (resource, group) = res.resource();
    match code {
        403 => status(
            403,
            "Forbidden",
            &format!(
                "{resource} is forbidden: User \"system:serviceaccount:kube-system:ipwarden\" \
                 cannot list resource \"{resource}\" in API group \"{group}\" at the cluster scope"
            ),
            Some(res),
        ),
        500 => {
            let mut s = status(
                500,
                "InternalError",
                "Internal error occurred: etcdserver: request timed out",
                Some(res),
            );
            s["details"]["causes"] = json!([{"message": "etcdserver: request timed out"}]);
            s
        }
        code => status(
            code,
            "Unknown",
            "the fake server was told to fail",
            Some(res),
        ),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        _ => "Error",
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The name a `metadata.name=X` field selector asks for.
fn name_selector(q: &HashMap<String, String>) -> Option<String> {
    q.get("fieldSelector")?
        .split(',')
        .find_map(|s| s.strip_prefix("metadata.name=").map(str::to_string))
}

fn selected(object: &Value, name: &Option<String>) -> bool {
    name.as_ref()
        .is_none_or(|n| object["metadata"]["name"].as_str() == Some(n.as_str()))
}

/// One client connection: requests in turn (keep-alive) until it closes,
/// a watch ends it, or the server goes down.
async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match rd.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            head.push(line);
        }
        let Some(request_line) = head.first() else {
            return;
        };
        let mut parts = request_line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        );
        // A watch is dropped by every drop_watches after its request is
        // logged (tests wait for the request, then drop).
        let kill_at_request = {
            let mut st = shared.state.lock().unwrap();
            if st.down {
                return;
            }
            st.requests
                .push(format!("{method} {}", percent_decode(&target)));
            st.kill
        };
        shared.ring();
        let (path, q) = target.split_once('?').unwrap_or((&target, ""));
        if method == "POST" || method == "PATCH" {
            let mut body = vec![0u8; content_length(&head)];
            if rd.read_exact(&mut body).await.is_err() {
                return;
            }
            let (code, answer) = write_event(&shared, &method, path, &body);
            shared.ring();
            if respond(&mut wr, code, &answer).await.is_err() {
                return;
            }
            continue;
        }
        let q = query(q);
        let crd_missing = |r: &Res| {
            *r == Res::ClusterNetworkPolicies && !shared.state.lock().unwrap().crd_installed
        };
        let Some(res) = Res::from_path(path).filter(|r| !crd_missing(r)) else {
            let body = status(
                404,
                "NotFound",
                &format!("the server could not find {path}"),
                None,
            );
            if respond(&mut wr, 404, &body).await.is_err() {
                return;
            }
            continue;
        };
        if q.get("watch").map(String::as_str) == Some("true") {
            serve_watch(&mut wr, &shared, res, &q, kill_at_request).await;
            return;
        }
        let (code, body) = match list(&shared, res, &q).await {
            Some(answer) => answer,
            None => return, // the server went down while the list was held
        };
        if respond_bytes(&mut wr, code, &body).await.is_err() {
            return;
        }
    }
}

fn content_length(head: &[String]) -> usize {
    head.iter()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// A create (POST) or merge patch (PATCH) of an events.k8s.io/v1 Event,
/// checked and answered as the API server does: 201 or 200 with the
/// stored object, 422 without the fields v1 requires, 409 on a taken
/// name, 404 for a patch of an unknown one, 405 for other resources.
fn write_event(shared: &Shared, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (namespace, name) = match parts[..] {
        ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"] => (ns, None),
        ["apis", "events.k8s.io", "v1", "namespaces", ns, "events", name] => (ns, Some(name)),
        _ => {
            let message = format!("the server does not allow this method on {path}");
            return (405, status(405, "MethodNotAllowed", &message, None));
        }
    };
    let Ok(mut event) = serde_json::from_slice::<Value>(body) else {
        return (400, status(400, "BadRequest", "the body is not JSON", None));
    };
    let mut st = shared.state.lock().unwrap();
    st.rv += 1;
    let rv = st.rv;
    if method == "PATCH" {
        let key = (namespace.to_string(), name.unwrap_or_default().to_string());
        let Some(stored) = st.posted_events.get_mut(&key) else {
            let message = format!("events.events.k8s.io \"{}\" not found", key.1);
            return (404, status(404, "NotFound", &message, None));
        };
        merge_patch(stored, &event);
        stored["metadata"]["resourceVersion"] = json!(rv.to_string());
        return (200, stored.clone());
    }
    let missing: Vec<&str> = [
        "eventTime",
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ]
    .into_iter()
    .filter(|f| event[*f].is_null())
    .collect();
    if !missing.is_empty() || event["metadata"]["name"].is_null() {
        let message = format!("Event is invalid: missing {missing:?} or metadata.name");
        return (422, status(422, "Invalid", &message, None));
    }
    let key = (
        namespace.to_string(),
        event["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    if st.posted_events.contains_key(&key) {
        let message = format!("events.events.k8s.io \"{}\" already exists", key.1);
        return (409, status(409, "AlreadyExists", &message, None));
    }
    event["apiVersion"] = json!("events.k8s.io/v1");
    event["kind"] = json!("Event");
    let m = &mut event["metadata"];
    m["namespace"] = json!(namespace);
    m["uid"] = json!(format!("00000000-0000-4000-9000-{rv:012}"));
    m["resourceVersion"] = json!(rv.to_string());
    m["creationTimestamp"] = json!("2026-11-29T10:00:00Z");
    st.posted_events.insert(key, event.clone());
    (201, event)
}

/// RFC 7386: objects merge key by key, null deletes, the rest replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let object = target.as_object_mut().unwrap();
    for (k, v) in fields {
        if v.is_null() {
            object.remove(k);
        } else {
            merge_patch(object.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

async fn respond(wr: &mut OwnedWriteHalf, code: u16, body: &Value) -> std::io::Result<()> {
    respond_bytes(wr, code, &serde_json::to_vec(body).unwrap()).await
}

async fn respond_bytes(wr: &mut OwnedWriteHalf, code: u16, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Audit-Id: fake\r\nCache-Control: no-cache, private\r\n\r\n",
        reason(code),
        body.len()
    );
    wr.write_all(head.as_bytes()).await?;
    wr.write_all(body).await?;
    wr.flush().await
}

/// A list (its status code and body), or a Status with the failure's
/// code; None if the server went down meanwhile.
async fn list(shared: &Shared, res: Res, q: &HashMap<String, String>) -> Option<(u16, Vec<u8>)> {
    let mut bell = shared.bell.subscribe();
    loop {
        bell.borrow_and_update();
        {
            let mut st = shared.state.lock().unwrap();
            if st.down {
                return None;
            }
            let now = st.rv;
            let coll = st.collections.entry(res).or_default();
            // Failures first: `fail_lists` then `hold_lists` fails one
            // list and holds the retry.
            if let Some(code) = coll.list_failures.pop_front() {
                return Some((code, serde_json::to_vec(&error_status(code, res)).unwrap()));
            }
            let next_page = q.get("continue").is_some_and(|c| !c.is_empty());
            if !(coll.held || coll.held_after_first_page && next_page) {
                let page = Page::of(q, now);
                let name = name_selector(q);
                let mut rest = coll
                    .objects
                    .iter()
                    .filter(|(k, _)| page.after.as_ref().is_none_or(|a| *k > a))
                    .filter(|(_, o)| selected(&o.object, &name));
                let items: Vec<(&Key, &Stored)> = rest.by_ref().take(page.limit).collect();
                let remaining = rest.count();
                let mut metadata = json!({"resourceVersion": page.rv.to_string()});
                if let (true, Some((last, _))) = (remaining > 0, items.last()) {
                    metadata["continue"] = json!(format!("{}/{}/{}", page.rv, last.0, last.1));
                    metadata["remainingItemCount"] = json!(remaining);
                }
                let head = json!({
                    "kind": format!("{}List", res.kind()),
                    "apiVersion": res.api_version(),
                    "metadata": metadata,
                });
                return Some((
                    200,
                    list_body(&head, items.iter().map(|(_, o)| &o.item[..])),
                ));
            }
        }
        if bell.changed().await.is_err() {
            return None;
        }
    }
}

/// Records when event `rv` first left the server (just before its write).
fn note_sent(shared: &Shared, rv: u64) {
    let mut st = shared.state.lock().unwrap();
    st.sent_at
        .entry(rv)
        .or_insert_with(std::time::SystemTime::now);
}

/// A list's body: `head` (kind, apiVersion, metadata) with `items`, each
/// already serialized, spliced in as its last field.
fn list_body<'a>(head: &Value, items: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = serde_json::to_vec(head).unwrap();
    body.pop(); // the head object's closing brace
    body.extend_from_slice(br#","items":["#);
    for (i, item) in items.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    body
}

/// A list item: no apiVersion/kind, as a real server writes them.
fn list_item(object: &Value) -> Value {
    let mut o = object.clone();
    let m = o.as_object_mut().unwrap();
    m.remove("apiVersion");
    m.remove("kind");
    o
}

/// One page of a list (`limit`, `continue`), as a real server pages:
/// every page carries the resourceVersion of the first, so a watch from
/// it misses nothing (it may replay a change made between pages).
struct Page {
    limit: usize,
    /// The key of the last item of the previous page.
    after: Option<Key>,
    rv: u64,
}

impl Page {
    fn of(q: &HashMap<String, String>, now: u64) -> Page {
        let limit = q
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let token = q.get("continue").filter(|c| !c.is_empty());
        let parsed = token.and_then(|t| {
            let (rv, key) = t.split_once('/')?;
            let (ns, name) = key.split_once('/')?;
            Some((rv.parse().ok()?, (ns.to_string(), name.to_string())))
        });
        match parsed {
            Some((rv, after)) => Page {
                limit,
                after: Some(after),
                rv,
            },
            None => Page {
                limit,
                after: None,
                rv: now,
            },
        }
    }
}

fn chunk(event: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(event).unwrap();
    line.push(b'\n');
    let mut out = format!("{:x}\r\n", line.len()).into_bytes();
    out.extend_from_slice(&line);
    out.extend_from_slice(b"\r\n");
    out
}

async fn serve_watch(
    wr: &mut OwnedWriteHalf,
    shared: &Shared,
    res: Res,
    q: &HashMap<String, String>,
    kill: u64,
) {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let name = name_selector(q);
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
                Audit-Id: fake\r\nCache-Control: no-cache, private\r\nConnection: close\r\n\r\n";
    if wr.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let compacted = shared.state.lock().unwrap().compacted;
    if from < compacted {
        // What a real server sends for a resourceVersion it no longer has.
        let gone = json!({
            "type": "ERROR",
            "object": status(410, "Expired",
                &format!("too old resource version: {from} ({compacted})"), None),
        });
        let _ = wr.write_all(&chunk(&gone)).await;
        let _ = wr.write_all(b"0\r\n\r\n").await;
        let _ = wr.flush().await;
        return;
    }
    let mut sent = from;
    let mut bell = shared.bell.subscribe();
    loop {
        bell.borrow_and_update();
        let (events, killed) = {
            let mut st = shared.state.lock().unwrap();
            let killed = st.kill != kill;
            let until = if killed { st.kill_rv } else { u64::MAX };
            let coll = st.collections.entry(res).or_default();
            // Events are in resourceVersion order: start after the last sent.
            let first = coll.events.partition_point(|e| e.rv <= sent);
            let events: Vec<Event> = coll.events[first..]
                .iter()
                .filter(|e| e.rv <= until)
                .filter(|e| e.kind == "BOOKMARK" || selected(&e.object, &name))
                .cloned()
                .collect();
            (events, killed)
        };
        // What happened before a kill is still sent, so a test knows
        // what the client saw before the connection went.
        for e in events {
            let ev = json!({"type": e.kind, "object": e.object});
            // Noted before the write: the socket is not buffered, and a
            // client on another CPU can act on the event before this task
            // runs again.
            note_sent(shared, e.rv);
            if wr.write_all(&chunk(&ev)).await.is_err() {
                return;
            }
            sent = sent.max(e.rv);
        }
        if killed {
            // Half an event, then the connection goes: an EOF mid-chunk.
            let half = chunk(&json!({"type": "MODIFIED", "object": {"metadata": {}}}));
            let _ = wr.write_all(&half[..half.len() / 2]).await;
            let _ = wr.flush().await;
            return;
        }
        if wr.flush().await.is_err() {
            return;
        }
        if bell.changed().await.is_err() {
            return;
        }
    }
}
