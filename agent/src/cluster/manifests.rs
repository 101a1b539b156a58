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
    io,
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::mpsc::UnboundedSender;

use super::{
    shrink_hold::{ShrinkHolds, Verdict},
    source::{Change, HealthBook, Kind, ResourceHealth, Source},
    unreadable::{never_read_object, StandIn, Unreadable, UnreadableBook},
    HostInfo, KubeObject, Snapshot, Trim,
};

mod read;

use read::collect;
pub use read::{load, parse_text, read_file, DocumentProblem, Loaded};

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
