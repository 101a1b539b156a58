//! The daemon's loop, on tokio: the source's changes wake the controller
//! they concern (Service, EndpointSlice, Node -> services; Pod, Namespace,
//! NetworkPolicy -> policies); each controller has its own [`Schedule`]
//! (debounce, partial or full, retry) and its own worker thread, and both
//! write through the one set store at the same time, exactly the
//! arrangement in which kube-router lost `svip-prt` members.
//!
//! Kernel work runs on the workers' threads: netlink sockets belong to the
//! network namespace they were opened in, and those threads never leave
//! the agent's.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::{oneshot, watch, Notify};

use super::{
    schedule::{FullReason, Next, Schedule, SyncKind},
    ReconcileError,
};
use crate::cluster::source::{Change, Kind, Source};

/// One controller's work, run on a thread of its own.
pub trait Worker: Send + 'static {
    /// What the worker needs to know of the changes since its last sync.
    type Changes: Default + Clone + Send + 'static;

    fn name(&self) -> &'static str;

    /// Whether a change of `kind` concerns this controller.
    fn concerns(&self, kind: Kind) -> bool;

    /// Adds one changed object to `changes`.
    fn note(changes: &mut Self::Changes, kind: Kind, namespace: Option<String>, name: String);

    /// Puts the changes of a failed sync back in front of newer ones.
    fn merge(into: &mut Self::Changes, older: Self::Changes);

    /// One sync against the source's current snapshot; `reason` says why
    /// a full one runs.
    fn sync(
        &mut self,
        kind: SyncKind,
        reason: Option<FullReason>,
        changes: &Self::Changes,
        source: &dyn Source,
    ) -> Result<SyncDone, SyncError>;
}

/// What a successful sync reports to the observer.
#[derive(Debug, Default)]
pub struct SyncDone {
    /// One line for the log.
    pub summary: String,
    /// For each changed object with a trigger time, how long from that
    /// change to now (kube-proxy's network programming latency).
    pub programming_latencies: Vec<Duration>,
    /// The sync found the kernel already right (nothing written).
    pub noop: bool,
    /// What it changed, for the metrics (`run --once` records the same).
    pub counts: SyncCounts,
    /// CPU of the worker thread and the children it waited for.
    pub cpu: Duration,
    /// Minor page faults of the worker thread.
    pub minor_faults: u64,
    /// How long each step took, in the order they ran (for the metrics:
    /// where a slow sync's time went).
    pub steps: Vec<(&'static str, Duration)>,
}

/// What one sync (or `run --once`'s pass) desired and changed: the
/// metrics both ways of running record alike.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// Virtual services desired; None from the policy controller.
    pub virtual_services: Option<usize>,
    /// Problems of the input (bad fields skipped).
    pub problems: usize,
    /// IPVS services and destinations added, edited or removed.
    pub ipvs_changes: u64,
    /// Set members added or deleted.
    pub set_member_changes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the source has not listed every kind yet")]
    NotReady,
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
}

impl SyncError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            SyncError::NotReady => "not_ready",
            SyncError::Reconcile(e) => e.metric_label(),
        }
    }
}

/// What the driver tells the layer above (metrics, health, readiness).
/// Owned here, where it is called; implemented by the API layer.
pub trait SyncObserver: Send + Sync {
    /// A controller has work queued (the first change since its last sync).
    fn queued(&self, controller: &'static str);
    /// A sync ended.
    fn synced(
        &self,
        controller: &'static str,
        kind: SyncKind,
        reason: Option<FullReason>,
        duration: Duration,
        result: &Result<SyncDone, SyncError>,
    );
    /// A source resource failed or recovered.
    fn source_health(&self, resource: &str, error: Option<&str>);
    /// A sync started while another controller's sync was under way: both
    /// write through the set store at the same time.
    fn overlapped(&self, controller: &'static str);
}

/// A controller's schedule and changes, shared by the dispatcher and its
/// runner.
struct Shared<C> {
    state: Mutex<(Schedule, C)>,
    wake: Notify,
}

/// A controller handed to [`run`].
pub struct Controller<W: Worker> {
    pub worker: W,
    pub schedule: Schedule,
}

/// Runs the dispatcher and every controller until `shutdown` turns true
/// (SIGTERM); a sync under way is finished first, and everything
/// programmed stays in place.
pub async fn run<S, P>(
    source: Arc<dyn Source>,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<Change>,
    services: Option<Controller<S>>,
    policies: Option<Controller<P>>,
    observer: Arc<dyn SyncObserver>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Worker,
    P: Worker,
{
    let ready = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicUsize::new(0));
    let ctx = RunnerCtx {
        source,
        observer: observer.clone(),
        ready: ready.clone(),
        running,
        shutdown: shutdown.clone(),
    };
    let (s_shared, s_task) = start(services, &ctx);
    let (p_shared, p_task) = start(policies, &ctx);
    loop {
        let change = tokio::select! {
            c = changes.recv() => c,
            _ = shutdown.changed() => None,
        };
        let Some(change) = change else { break };
        let now = Instant::now();
        match change {
            Change::Ready => {
                ready.store(true, Ordering::SeqCst);
                wake(&s_shared);
                wake(&p_shared);
            }
            Change::Object {
                kind,
                namespace,
                name,
            } => {
                note(&s_shared, &observer, kind, &namespace, &name, now);
                note(&p_shared, &observer, kind, &namespace, &name, now);
            }
            Change::Relisted(kind) => {
                relisted(&s_shared, &observer, kind, now);
                relisted(&p_shared, &observer, kind, now);
            }
            Change::Health { resource, error } => {
                observer.source_health(&resource, error.as_deref());
            }
        }
        if *shutdown.borrow() {
            break;
        }
    }
    for task in [s_task, p_task].into_iter().flatten() {
        let _ = task.await;
    }
}

/// What every runner shares.
#[derive(Clone)]
struct RunnerCtx {
    source: Arc<dyn Source>,
    observer: Arc<dyn SyncObserver>,
    ready: Arc<AtomicBool>,
    /// Syncs under way, across controllers.
    running: Arc<AtomicUsize>,
    shutdown: watch::Receiver<bool>,
}

/// The runner task of one controller, and what the dispatcher needs of it.
type Started<C> = (Option<Routed<C>>, Option<tokio::task::JoinHandle<()>>);

/// The shared state and runner task of one controller.
fn start<W: Worker>(controller: Option<Controller<W>>, ctx: &RunnerCtx) -> Started<W::Changes> {
    let Some(Controller { worker, schedule }) = controller else {
        return (None, None);
    };
    let concerns: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| worker.concerns(*k))
        .collect();
    let shared = Arc::new(Shared {
        state: Mutex::new((schedule, W::Changes::default())),
        wake: Notify::new(),
    });
    let routed = Routed {
        shared: shared.clone(),
        concerns,
        note: W::note,
        name: worker.name(),
    };
    let task = tokio::spawn(runner(worker, shared, ctx.clone()));
    (Some(routed), Some(task))
}

/// What the dispatcher needs of a controller.
struct Routed<C> {
    shared: Arc<Shared<C>>,
    concerns: Vec<Kind>,
    note: fn(&mut C, Kind, Option<String>, String),
    name: &'static str,
}

fn wake<C>(r: &Option<Routed<C>>) {
    if let Some(r) = r {
        r.shared.wake.notify_one();
    }
}

fn note<C>(
    r: &Option<Routed<C>>,
    observer: &Arc<dyn SyncObserver>,
    kind: Kind,
    namespace: &Option<String>,
    name: &str,
    now: Instant,
) {
    let Some(r) = r else { return };
    if !r.concerns.contains(&kind) {
        return;
    }
    let first = {
        let mut st = lock(&r.shared.state);
        let first = st.0.queued_since().is_none();
        st.0.request(now);
        (r.note)(&mut st.1, kind, namespace.clone(), name.to_string());
        first
    };
    if first {
        observer.queued(r.name);
    }
    r.shared.wake.notify_one();
}

fn relisted<C>(r: &Option<Routed<C>>, observer: &Arc<dyn SyncObserver>, kind: Kind, now: Instant) {
    let Some(r) = r else { return };
    if !r.concerns.contains(&kind) {
        return;
    }
    lock(&r.shared.state)
        .0
        .request_full(now, FullReason::Relist);
    observer.queued(r.name);
    r.shared.wake.notify_one();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One job for a worker thread, with where to send its result.
type Job<C> = (
    SyncKind,
    Option<FullReason>,
    C,
    oneshot::Sender<Result<SyncDone, SyncError>>,
);

/// Runs `worker` on a thread of its own; jobs arrive on the returned sender.
fn spawn_worker<W: Worker>(
    mut worker: W,
    source: Arc<dyn Source>,
) -> mpsc::Sender<Job<W::Changes>> {
    let (tx, rx) = mpsc::channel::<Job<W::Changes>>();
    let name = format!("ipwarden-{}", worker.name());
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut released = false;
            for (kind, reason, changes, reply) in rx {
                let cpu = super::cpu::SyncCpu::start();
                let mut result = worker.sync(kind, reason, &changes, source.as_ref());
                if let Ok(done) = &mut result {
                    // The first full sync built and freed the largest
                    // states. A trim walks every free chunk with the arenas
                    // locked, so only once, and before the reply: a sync
                    // of the other controller right after readiness would
                    // otherwise wait on the arenas for as long.
                    if kind == SyncKind::Full && !released {
                        let trim = Instant::now();
                        crate::malloc::release_free_pages();
                        done.steps.push(("release free pages", trim.elapsed()));
                        released = true;
                    }
                    done.cpu = cpu.elapsed();
                    done.minor_faults = cpu.minor_faults();
                }
                let _ = reply.send(result);
            }
        })
        .expect("spawning a worker thread");
    tx
}

/// A controller's loop: wait for its schedule, sync, record.
async fn runner<W: Worker>(worker: W, shared: Arc<Shared<W::Changes>>, ctx: RunnerCtx) {
    let RunnerCtx {
        source,
        observer,
        ready,
        running,
        mut shutdown,
    } = ctx;
    let name = worker.name();
    let jobs = spawn_worker(worker, source);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let now = Instant::now();
        let next = if ready.load(Ordering::SeqCst) {
            lock(&shared.state).0.next(now)
        } else {
            // Never act on a cold cache: wait for Ready.
            Next::WaitUntil(now + Duration::from_secs(3600))
        };
        let kind = match next {
            Next::Sync(kind) => kind,
            Next::WaitUntil(at) => {
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        };
        let (changes, reason) = {
            let mut st = lock(&shared.state);
            let reason = (kind == SyncKind::Full).then(|| st.0.full_sync_reason());
            st.0.started(now, kind);
            (std::mem::take(&mut st.1), reason)
        };
        if running.fetch_add(1, Ordering::SeqCst) > 0 {
            observer.overlapped(name);
        }
        let (reply, result) = oneshot::channel();
        if jobs.send((kind, reason, changes.clone(), reply)).is_err() {
            tracing::error!(controller = name, "the worker thread is gone");
            break;
        }
        let result = result.await.unwrap_or(Err(SyncError::NotReady));
        running.fetch_sub(1, Ordering::SeqCst);
        let ended = Instant::now();
        {
            let mut st = lock(&shared.state);
            st.0.finished(ended, now, kind, result.is_ok());
            if result.is_err() {
                W::merge(&mut st.1, changes);
            }
        }
        match &result {
            Ok(done) => tracing::info!(
                controller = name,
                ?kind,
                cpu_ms = done.cpu.as_millis() as u64,
                minor_faults = done.minor_faults,
                "{}",
                done.summary
            ),
            Err(e) => tracing::error!(
                controller = name,
                ?kind,
                "sync failed (retried with backoff, fully): {e}"
            ),
        }
        observer.synced(name, kind, reason, ended - now, &result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{source::ResourceHealth, HostInfo, Snapshot};

    struct NoCluster;

    impl Source for NoCluster {
        fn snapshot(&self, _: &HostInfo) -> Option<Snapshot> {
            None
        }
        fn health(&self) -> Vec<ResourceHealth> {
            Vec::new()
        }
        fn listed(&self) -> bool {
            true
        }
    }

    /// Syncs that succeed at once.
    struct Idle;

    impl Worker for Idle {
        type Changes = ();
        fn name(&self) -> &'static str {
            "idle"
        }
        fn concerns(&self, _: Kind) -> bool {
            false
        }
        fn note(_: &mut (), _: Kind, _: Option<String>, _: String) {}
        fn merge(_: &mut (), _: ()) {}
        fn sync(
            &mut self,
            _: SyncKind,
            _: Option<FullReason>,
            _: &(),
            _: &dyn Source,
        ) -> Result<SyncDone, SyncError> {
            Ok(SyncDone::default())
        }
    }

    #[test]
    fn the_first_full_sync_releases_free_pages_before_it_reports() {
        let jobs = spawn_worker(Idle, Arc::new(NoCluster));
        let trimmed = |kind| {
            let (reply, result) = oneshot::channel();
            jobs.send((kind, None, (), reply)).unwrap();
            let done = result.blocking_recv().unwrap().unwrap();
            done.steps.iter().any(|(s, _)| *s == "release free pages")
        };
        assert!(!trimmed(SyncKind::Partial), "not after a partial sync");
        assert!(trimmed(SyncKind::Full), "the first full sync's reply");
        assert!(!trimmed(SyncKind::Full), "only once");
    }
}
