//! The manifests source: a file or a folder of kubectl-style YAML or JSON
//! (several documents per file, `kind: List` allowed).
//!
//! An object that does not parse is reported with its file, document,
//! kind/name and the field that failed; the rest is kept. In the running
//! source it keeps its last good version, or its stand-in when it was never
//! read ([`super::unreadable`]): a bad edit never opens the firewall.
//!
//! [`ManifestsSource`] serves a folder through the [`Source`] seam: it
//! re-reads on inotify events (once the folder has been quiet for 50 ms),
//! and a file that does not parse as a whole (truncated mid-document,
//! replaced by garbage, unreadable) keeps its last good content in force
//! and is reported failing until it reads again. Writers should replace
//! files at once (write aside, rename; ConfigMap volumes do); a file
//! rewritten in place that reads empty or far smaller is held at its last
//! good content until it has read the same for 5 s ([`super::shrink_hold`]).

use crate::locks::LockOrRecover;
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, io,
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::{
    shrink_hold::{ShrinkHolds, Verdict},
    source::{Change, HealthBook, Kind, ResourceHealth, Source},
    unreadable::{never_read_object, StandIn, Unreadable, UnreadableBook},
    HostInfo, KubeObject, Snapshot, Trim,
};

/// One object that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentProblem {
    pub file: PathBuf,
    /// 1-based document number in the file (items of a List count apart).
    pub document: usize,
    /// "Service default/web" when the document got that far.
    pub object: Option<String>,
    /// The object's kind, namespace and name, when it is of a kind
    /// ipwarden reads and has a name: its last good version (or its
    /// stand-in) stays in force ([`super::unreadable`]).
    pub key: Option<Key>,
    pub error: String,
}

impl fmt::Display for DocumentProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.file.display(), self.document)?;
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        write!(f, ": {}", self.error)
    }
}

/// What a load produced.
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<KubeObject>,
    pub problems: Vec<DocumentProblem>,
    /// Files read, for change detection.
    pub files: Vec<PathBuf>,
}

/// Reads `path` (a file, or every *.yaml, *.yml and *.json in a folder,
/// recursively, in name order). Fails only when `path` itself cannot be read.
pub fn load(path: &Path) -> std::io::Result<Loaded> {
    let mut loaded = Loaded::default();
    let files = if path.is_dir() {
        let mut files = Vec::new();
        collect(path, &mut files)?;
        files
    } else {
        vec![path.to_path_buf()]
    };
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        parse_text(&file, &text, &mut loaded);
        loaded.files.push(file);
    }
    Ok(loaded)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        // Hidden entries are not manifests: editors' swap files, and a
        // ConfigMap volume's `..data` and `..<timestamp>` folders (its
        // files are symlinks into them, so they would be read twice).
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        if p.is_dir() {
            collect(&p, out)?;
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

/// The documents of one file's text: a `.json` file by serde_json (one or
/// more values), the rest as YAML (a superset of JSON). The YAML loader
/// holds a whole document's parser events, about 25 times its text: a
/// 10k-object List in JSON peaked at 200 MB that way.
fn documents<'a>(
    file: &Path,
    text: &'a str,
) -> Box<dyn Iterator<Item = Result<Value, String>> + 'a> {
    if file.extension().is_some_and(|e| e == "json") {
        let values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        Box::new(values.map(|v| v.map_err(|e| e.to_string())))
    } else {
        let docs = serde_yaml_ng::Deserializer::from_str(text);
        Box::new(
            docs.map(|d| <Value as serde::Deserialize>::deserialize(d).map_err(|e| e.to_string())),
        )
    }
}

/// Parses one file's text.
pub fn parse_text(file: &Path, text: &str, loaded: &mut Loaded) {
    let mut document = 0;
    for doc in documents(file, text) {
        let value = match doc {
            Ok(Value::Null) => continue, // an empty document between `---`
            Ok(v) => v,
            Err(e) => {
                document += 1;
                loaded.problems.push(DocumentProblem {
                    file: file.to_path_buf(),
                    document,
                    object: None,
                    key: None,
                    error: format!("not YAML/JSON: {e}"),
                });
                // The YAML stream cannot continue past a syntax error.
                return;
            }
        };
        let items = if value["kind"] == "List" {
            // Taken, not cloned: a List of 10k objects is held once.
            let mut value = value;
            match value["items"].take() {
                Value::Array(items) => items,
                _ => Vec::new(),
            }
        } else {
            vec![value]
        };
        for item in items {
            document += 1;
            match object(item) {
                Ok(Some(o)) => loaded.objects.push(o),
                Ok(None) => {}
                Err((object, key, error)) => loaded.problems.push(DocumentProblem {
                    file: file.to_path_buf(),
                    document,
                    object,
                    key,
                    error,
                }),
            }
        }
    }
}

/// A typed object, `None` for kinds ipwarden does not use.
#[allow(clippy::type_complexity)]
fn object(v: Value) -> Result<Option<KubeObject>, (Option<String>, Option<Key>, String)> {
    let kind = v["kind"].as_str().unwrap_or_default().to_string();
    let api = v["apiVersion"].as_str().unwrap_or_default().to_string();
    let name = v["metadata"]["name"].as_str().unwrap_or_default();
    let label = match v["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    };
    let key = |k: Kind| {
        let namespace = v["metadata"]["namespace"].as_str().map(str::to_string);
        (!name.is_empty()).then(|| (k, namespace, name.to_string()))
    };
    let (typed, key) = match (api.as_str(), kind.as_str()) {
        ("v1", "Service") => (typed(&v).map(KubeObject::Service), key(Kind::Service)),
        ("discovery.k8s.io/v1", "EndpointSlice") => (
            typed(&v).map(KubeObject::EndpointSlice),
            key(Kind::EndpointSlice),
        ),
        ("v1", "Pod") => (typed(&v).map(KubeObject::Pod), key(Kind::Pod)),
        ("v1", "Namespace") => (typed(&v).map(KubeObject::Namespace), key(Kind::Namespace)),
        ("networking.k8s.io/v1", "NetworkPolicy") => (
            typed(&v).map(KubeObject::NetworkPolicy),
            key(Kind::NetworkPolicy),
        ),
        (super::cnp::API_VERSION, super::cnp::KIND) => (
            typed(&v).map(KubeObject::ClusterNetworkPolicy),
            key(Kind::ClusterNetworkPolicy),
        ),
        ("v1", "Node") => (typed(&v).map(KubeObject::Node), key(Kind::Node)),
        (_, "") => return Err((None, None, "no `kind`".into())),
        _ => return Ok(None),
    };
    typed.map(Some).map_err(|e| (Some(label), key, e))
}

/// Deserialises with the failing field's path in the error
/// ("spec.ports[0].port: invalid type: string ...").
fn typed<T: DeserializeOwned>(v: &Value) -> Result<Box<T>, String> {
    serde_path_to_error::deserialize(v)
        .map(Box::new)
        .map_err(|e| format!("field {}: {}", e.path(), e.inner()))
}

/// One file's objects, or why the file as a whole cannot be used: it
/// cannot be read, is not YAML/JSON (a truncated document), or holds a
/// document that is not an object with a `kind` (garbage). Objects that
/// fail on their own fields are in `problems` and skipped; the rest counts.
pub fn read_file(file: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut loaded = Loaded::default();
    parse_text(file, &text, &mut loaded);
    if let Some(p) = loaded.problems.iter().find(|p| p.object.is_none()) {
        return Err(p.to_string());
    }
    loaded.files.push(file.to_path_buf());
    Ok(loaded)
}

/// How long the folder must stay quiet after an inotify event before it
/// is read (an editor writes a file in several steps).
const QUIET: Duration = Duration::from_millis(50);

/// A folder (or one file) of manifests, re-read on inotify events.
/// Dropping it stops watching.
pub struct ManifestsSource {
    inner: Arc<Inner>,
    _watcher: notify::RecommendedWatcher,
}

struct Inner {
    root: PathBuf,
    state: Mutex<State>,
    health: HealthBook,
    unreadable: UnreadableBook,
    changes: UnboundedSender<Change>,
}

#[derive(Default)]
struct State {
    /// The last good content of each file; None until it first parsed.
    /// An object that does not read is there at its last good version (or
    /// its stand-in).
    files: BTreeMap<PathBuf, Option<Vec<KubeObject>>>,
    /// The objects of each file that do not read.
    unreadable: BTreeMap<PathBuf, Vec<Unreadable>>,
    /// Files whose last read shrank them, held at their last good content.
    holds: ShrinkHolds,
    ready: bool,
    /// The last snapshot taken, for the host it was taken for: until the
    /// files change, the next one shares its objects (no deep copy).
    taken: Option<Snapshot>,
}

impl State {
    /// What stands in for the objects of `problems` (their last good
    /// version anywhere in the folder, else [`never_read_object`]), added
    /// to `objects`; the unreadable objects, for the book.
    fn stand_ins(
        &self,
        problems: &[DocumentProblem],
        objects: &mut Vec<KubeObject>,
    ) -> Vec<Unreadable> {
        let mut out = Vec::new();
        for p in problems {
            let Some((kind, namespace, name)) = p.key.clone() else {
                continue;
            };
            let k = (kind, namespace.clone(), name.clone());
            let last = self
                .files
                .values()
                .flatten()
                .flatten()
                .find(|o| key(o) == k);
            let meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.clone()),
                namespace: namespace.clone(),
                ..Default::default()
            };
            let (object, stand_in) = match last {
                Some(o) => (Some(o.clone()), StandIn::LastGood),
                None => match never_read_object(kind, &meta) {
                    Some(o) => (Some(o), StandIn::DenyAll),
                    None => (None, StandIn::Nothing),
                },
            };
            objects.extend(object);
            out.push(Unreadable {
                kind,
                namespace,
                name,
                error: format!("{} document {}: {}", p.file.display(), p.document, p.error),
                stand_in,
            });
        }
        out
    }
}

/// An object's kind, namespace and name.
pub type Key = (Kind, Option<String>, String);

fn key(o: &KubeObject) -> Key {
    let m = o.meta();
    (
        o.source_kind(),
        m.namespace.clone(),
        m.name.clone().unwrap_or_default(),
    )
}

impl ManifestsSource {
    /// Reads `path` (a file, or a folder read recursively) and watches it.
    /// Fails when `path` cannot be read or watched. `Ready` is sent once
    /// every file has parsed (at once, when all do).
    pub fn start(path: &Path, changes: UnboundedSender<Change>) -> io::Result<ManifestsSource> {
        Self::start_holding(path, changes, super::shrink_hold::HOLD)
    }

    /// The same, holding a file that shrank until it has read the same for
    /// `hold` (tests choose it; the agent holds 5 s).
    pub fn start_holding(
        path: &Path,
        changes: UnboundedSender<Change>,
        hold: Duration,
    ) -> io::Result<ManifestsSource> {
        let root = std::fs::canonicalize(path)?;
        if !root.is_dir() {
            std::fs::metadata(&root)?;
        } else {
            std::fs::read_dir(&root)?;
        }
        let inner = Arc::new(Inner {
            root: root.clone(),
            state: Mutex::new(State {
                holds: ShrinkHolds::new(hold),
                ..State::default()
            }),
            health: HealthBook::new(changes.clone()),
            unreadable: UnreadableBook::new(changes.clone()),
            changes,
        });
        let (tx, rx) = mpsc::channel::<()>();
        let file = (!root.is_dir()).then(|| root.clone());
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let relevant = match res {
                // Our own reads show as Access events: ignore all but a
                // write that closed.
                Ok(ev) => {
                    let kind_ok = match ev.kind {
                        notify::EventKind::Access(notify::event::AccessKind::Close(
                            notify::event::AccessMode::Write,
                        )) => true,
                        notify::EventKind::Access(_) => false,
                        _ => true,
                    };
                    kind_ok
                        && file
                            .as_ref()
                            .is_none_or(|f| ev.paths.is_empty() || ev.paths.contains(f))
                }
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(());
            }
        })
        .map_err(io::Error::other)?;
        {
            use notify::Watcher;
            let (watched, mode) = if root.is_dir() {
                (root.as_path(), notify::RecursiveMode::Recursive)
            } else {
                // The folder, not the file: editors replace files by rename.
                (
                    root.parent().unwrap_or(Path::new("/")),
                    notify::RecursiveMode::NonRecursive,
                )
            };
            watcher.watch(watched, mode).map_err(io::Error::other)?;
        }
        inner.reload();
        let worker = inner.clone();
        std::thread::Builder::new()
            .name("ipwarden-manifests".into())
            .spawn(move || loop {
                // A change, or a held file due to be read again.
                let hold = worker
                    .state
                    .lock()
                    .unwrap()
                    .holds
                    .next_check(Instant::now());
                let event = match hold {
                    Some(due) => rx.recv_timeout(due),
                    None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                };
                match event {
                    Ok(()) => loop {
                        // Debounce: read once the folder is quiet.
                        match rx.recv_timeout(QUIET) {
                            Ok(()) => continue,
                            Err(mpsc::RecvTimeoutError::Timeout) => break,
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    },
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                worker.reload();
            })?;
        Ok(ManifestsSource {
            inner,
            _watcher: watcher,
        })
    }
}

impl Inner {
    fn files(&self) -> io::Result<Vec<PathBuf>> {
        if self.root.is_dir() {
            let mut files = Vec::new();
            collect(&self.root, &mut files)?;
            Ok(files)
        } else {
            std::fs::metadata(&self.root)?;
            Ok(vec![self.root.clone()])
        }
    }

    /// Reads every file again; what changed is sent to the loop.
    fn reload(&self) {
        let root = self.root.display().to_string();
        let files = match self.files() {
            Ok(f) => {
                if self.root.is_dir() {
                    self.health.ok(&root);
                    self.health.listed(&root);
                }
                f
            }
            Err(e) => {
                // Nothing is known about the files: keep them all.
                self.health.failed(&root, format!("{root}: {e}"));
                return;
            }
        };
        let mut state = self.state.lock_or_recover();
        let mut changed: BTreeSet<Key> = BTreeSet::new();
        let present: BTreeSet<&PathBuf> = files.iter().collect();
        let gone: Vec<PathBuf> = state
            .files
            .keys()
            .filter(|f| !present.contains(f))
            .cloned()
            .collect();
        for f in gone {
            // A file removed is content removed, not a failure.
            if let Some(Some(old)) = state.files.remove(&f) {
                changed.extend(old.iter().map(key));
            }
            state.unreadable.remove(&f);
            state.holds.forget(&f);
            if !self.root.is_dir() || f != self.root {
                self.health.forget(&f.display().to_string());
            }
        }
        for f in &files {
            let resource = f.display().to_string();
            match read_file(f) {
                Ok(mut loaded) => {
                    if self.held(&mut state, f, &loaded.objects) {
                        continue;
                    }
                    // Held trimmed, as the API server's stores hold them.
                    loaded.objects.iter_mut().for_each(Trim::trim);
                    for p in &loaded.problems {
                        self.health.skipped(&resource);
                        if p.key.is_none() {
                            tracing::warn!("skipped: {p}");
                        }
                    }
                    self.health.ok(&resource);
                    self.health.listed(&resource);
                    let unreadable = state.stand_ins(&loaded.problems, &mut loaded.objects);
                    state.unreadable.insert(f.clone(), unreadable);
                    let old = state.files.insert(f.clone(), Some(loaded.objects));
                    let new = state.files[f].as_deref().unwrap_or_default();
                    changed.extend(diff(old.flatten().as_deref().unwrap_or_default(), new));
                }
                Err(e) => {
                    self.health.failed(&resource, e);
                    state.files.entry(f.clone()).or_insert(None);
                }
            }
        }
        state.taken = None;
        self.unreadable
            .replace(state.unreadable.values().flatten().cloned().collect());
        if !state.ready {
            if state.files.values().all(Option::is_some) {
                state.ready = true;
                let _ = self.changes.send(Change::Ready);
            }
            return;
        }
        for (kind, namespace, name) in changed {
            let _ = self.changes.send(Change::Object {
                kind,
                namespace,
                name,
            });
        }
    }
}

impl Inner {
    /// Is `file`, read as `objects`, held at its last good content (a
    /// rewrite caught half-written)? Logged and counted when a hold starts.
    fn held(&self, state: &mut State, file: &Path, objects: &[KubeObject]) -> bool {
        let in_force = match state.files.get(file) {
            Some(Some(old)) if state.ready => old.len(),
            _ => return false,
        };
        let resource = file.display().to_string();
        match state.holds.check(file, in_force, objects, Instant::now()) {
            Verdict::Accept => false,
            Verdict::Holding => true,
            Verdict::HoldNew => {
                tracing::warn!(
                    resource,
                    objects_in_force = in_force,
                    objects_read = objects.len(),
                    "{resource} shrank from {in_force} objects to {}: its last good content stays in force until it reads the same for {}s (a rewrite in place caught half-written?)",
                    objects.len(),
                    state.holds.hold().as_secs_f64()
                );
                self.health.held(&resource);
                true
            }
        }
    }
}

/// The keys of objects added, edited or removed between `old` and `new`.
fn diff(old: &[KubeObject], new: &[KubeObject]) -> BTreeSet<Key> {
    fn index(objects: &[KubeObject]) -> BTreeMap<Key, &KubeObject> {
        objects.iter().map(|o| (key(o), o)).collect()
    }
    let (old, new) = (index(old), index(new));
    let mut changed: BTreeSet<Key> = old
        .iter()
        .filter(|(k, o)| new.get(*k) != Some(*o))
        .map(|(k, _)| k.clone())
        .collect();
    changed.extend(new.keys().filter(|k| !old.contains_key(*k)).cloned());
    changed
}

impl Source for ManifestsSource {
    fn snapshot(&self, host: &HostInfo) -> Option<Snapshot> {
        let mut state = self.inner.state.lock_or_recover();
        if !state.ready {
            return None;
        }
        if let Some(taken) = state.taken.as_ref().filter(|t| t.host == *host) {
            return Some(taken.clone());
        }
        let objects: Vec<KubeObject> = state.files.values().flatten().flatten().cloned().collect();
        let snapshot = Snapshot::from_objects(objects, host.clone());
        state.taken = Some(snapshot.clone());
        Some(snapshot)
    }

    fn health(&self) -> Vec<ResourceHealth> {
        self.inner.health.snapshot()
    }

    fn listed(&self) -> bool {
        self.inner.state.lock_or_recover().ready
    }

    fn unreadable(&self) -> Vec<Unreadable> {
        self.inner.unreadable.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Loaded {
        let mut l = Loaded::default();
        parse_text(Path::new("t.yaml"), text, &mut l);
        l
    }

    #[test]
    fn multi_document_yaml_list_and_json_are_read_and_unknown_kinds_ignored() {
        let l = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: default}\n---\n\
             ---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: ns1}\n\
             - apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: d}\n---\n\
             {\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\", \"namespace\": \"default\"}}\n",
        );
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        let kinds: Vec<&str> = l.objects.iter().map(KubeObject::kind).collect();
        assert_eq!(kinds, ["Service", "Namespace", "Pod"]);
    }

    #[test]
    fn a_json_file_is_read_by_the_json_parser_values_one_after_another() {
        let mut l = Loaded::default();
        let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}]}
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "a"}}
            {"apiVersion": "v1", "kind": "#;
        parse_text(Path::new("t.json"), text, &mut l);
        let kinds: Vec<&str> = l.objects.iter().map(KubeObject::kind).collect();
        assert_eq!(kinds, ["Namespace", "Service"]);
        assert_eq!(l.problems.len(), 1, "{:?}", l.problems);
        assert_eq!(l.problems[0].document, 3);
        assert!(
            l.problems[0].error.starts_with("not YAML/JSON: EOF"),
            "{}",
            l.problems[0].error
        );
    }

    #[test]
    fn a_bad_object_names_its_field_and_the_others_are_kept() {
        let l = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: shop}\n\
             spec:\n  ports:\n  - port: eighty\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: good, namespace: shop}\n",
        );
        assert_eq!(l.objects.len(), 1);
        assert_eq!(l.objects[0].meta().name.as_deref(), Some("good"));
        let p = &l.problems[0];
        assert_eq!(p.document, 1);
        assert_eq!(p.object.as_deref(), Some("Service shop/bad"));
        assert!(p.error.contains("spec.ports[0].port"), "{}", p.error);
        assert!(p
            .to_string()
            .starts_with("t.yaml document 1 (Service shop/bad): field spec.ports[0].port"));
    }

    #[test]
    fn a_configmap_volume_is_read_once_through_its_symlinks() {
        let dir = std::env::temp_dir().join(format!("ipw-cm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data = dir.join("..2026_11_29_10_00_00.000000001");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            data.join("web.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(data.file_name().unwrap(), dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/web.yaml", dir.join("web.yaml")).unwrap();
        let l = load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(l.objects.len(), 1, "{:?}", l.files);
    }

    #[test]
    fn a_syntax_error_is_a_problem_not_a_panic() {
        let l = parse("apiVersion: v1\nkind: Service\nmetadata: [unclosed\n");
        assert!(l.objects.is_empty());
        assert_eq!(l.problems.len(), 1);
    }
}
