//! `ipwarden run` as a daemon: the source (a manifests folder on inotify,
//! or the API server's reflectors) feeds the event-driven loop
//! (`reconcile::driver`), each controller syncing on its own schedule; the
//! auditor and the policy counters run on timers. SIGTERM stops the watches
//! and exits, leaving every kernel object and pin in place, so a rolling
//! update never blinks the data plane.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result};
use tokio::sync::{
    mpsc::{UnboundedReceiver, UnboundedSender},
    watch,
};

use crate::{
    api::{state::StatusView, HealthChecks, Metrics},
    cluster::{kube::KubeSource, manifests::ManifestsSource, Change, Source},
    reconcile::{
        board::{Board, SyncRecord},
        dataplane::RealDataplane,
        driver::{self, Controller, SyncDone, SyncError, SyncObserver},
        first_write::FirstWrite,
        policies, policies_owner,
        schedule::{FullReason, Intervals, Schedule, SyncKind},
        services, services_owner,
        workers::{PolicyWorker, ServiceWorker},
        PolicySync, ServiceSync,
    },
    store::SetStore,
};

use super::run::{node_name, select_backend, serve_api, setup, Args, Setup};

/// How often the denied-packet counters of the pod chains (and those of
/// unserved frontends) are read.
const POLICY_COUNTERS_EVERY: Duration = Duration::from_secs(5);

pub fn run(args: &Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // The blocking pool runs the periodic audits and counter reads and
        // the kube client's name lookups: a few at a time, never 512.
        .max_blocking_threads(4)
        .thread_name("ipwarden")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let (tx, changes) = tokio::sync::mpsc::unbounded_channel::<Change>();
    let source = runtime.block_on(start_source(args, &node_name(args)?, tx))?;
    // The first lists run on the runtime's workers while this thread sets
    // up the node (backend detection, eBPF, sockets): at 10k Services in
    // the VM that set-up was 2.4 s of the time to ready, spent before the
    // first list was even asked for.
    let setup = {
        let _in_runtime = runtime.enter();
        select_backend(args);
        setup(args)?
    };
    runtime.block_on(daemon(args, setup, source, changes))
}

/// The cluster's source, started: its events queue in `tx` until the
/// controllers exist.
async fn start_source(
    args: &Args,
    node_name: &str,
    tx: UnboundedSender<Change>,
) -> Result<Arc<dyn Source>> {
    Ok(match &args.manifests {
        Some(path) => Arc::new(
            ManifestsSource::start(path, tx)
                .with_context(|| format!("watching {}", path.display()))?,
        ),
        None => {
            let client =
                crate::cluster::kube::client(args.kubeconfig.as_deref(), args.master.as_deref())
                    .await?;
            Arc::new(KubeSource::start(client, node_name, tx))
        }
    })
}

async fn daemon(
    args: &Args,
    setup: Setup,
    source: Arc<dyn Source>,
    changes: UnboundedReceiver<Change>,
) -> Result<()> {
    let Setup {
        node_name,
        store,
        metrics,
        bpf,
        proxy,
        firewall,
    } = setup;
    metrics.set_queued_limit(args.healthz_queued_limit);
    let board = Board::default();
    let intervals = |full: Duration| Intervals {
        min_interval: args.min_sync_period,
        full_interval: full,
        ..Intervals::default()
    };
    let mut service_view = None;
    // With both controllers, the policies' first chain write goes after
    // the services' (reconcile/first_write.rs).
    let first_write = (proxy.is_some() && firewall.is_some()).then(FirstWrite::new);
    let services = match proxy {
        Some(opts) => {
            let mut dp =
                RealDataplane::connect_ipvs(store.clone(), opts.node_port_range, &opts.ipvs)
                    .context("starting the service proxy")?;
            if let Some(bpf) = bpf {
                dp = dp.with_bpf(bpf);
            }
            dp = dp.with_health_checks(Box::new(HealthChecks::new()));
            store.register(services_owner())?;
            metrics.sync.register("services");
            board.update(|b| {
                b.controllers.entry("services").or_default();
            });
            let sync = ServiceSync::new(dp, opts);
            service_view = Some(sync.view());
            Some(Controller {
                worker: ServiceWorker {
                    sync,
                    node_name: node_name.clone(),
                    board: board.clone(),
                    first_write: first_write.clone(),
                },
                schedule: Schedule::new(intervals(args.ipvs_sync_period)),
            })
        }
        None => None,
    };
    let policies = match firewall {
        Some(opts) => {
            store.register(policies_owner())?;
            metrics.sync.register("policies");
            board.update(|b| {
                b.controllers.entry("policies").or_default();
            });
            Some(Controller {
                worker: PolicyWorker {
                    sync: after_services(
                        PolicySync::new(RealDataplane::connect(store.clone())?, opts),
                        first_write,
                    ),
                    node_name: node_name.clone(),
                    board: board.clone(),
                },
                schedule: Schedule::new(intervals(args.iptables_sync_period)),
            })
        }
        None => None,
    };
    serve_api(
        args,
        &metrics,
        StatusView {
            board: board.clone(),
            source: source.clone(),
            node_name: node_name.clone(),
        },
    )?;
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(stop_on_signal(stop));
    tokio::spawn(audit(
        store.clone(),
        metrics.clone(),
        board.clone(),
        args.audit_interval,
        args.audit_heal_delay,
    ));
    if args.run_firewall {
        tokio::spawn(policy_counters(metrics.clone()));
    }
    if let Some(view) = service_view {
        tokio::spawn(no_local_endpoint_counters(metrics.clone(), view));
    }
    tokio::spawn(super::source_deadline::watch(
        source.clone(),
        metrics.clone(),
        args.source_list_deadline,
    ));
    let observer = Arc::new(Observer {
        metrics: metrics.clone(),
        ready_file: args.ready_file.clone(),
        board,
        source: source.clone(),
    });
    driver::run(source, changes, services, policies, observer, shutdown).await;
    tracing::info!("stopped; every kernel object and pin stays in place");
    Ok(())
}

/// SIGTERM or SIGINT: stop after the syncs under way.
async fn stop_on_signal(stop: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    let _ = stop.send(true);
}

/// The auditor on its timer: drift counted, healed after the delay.
async fn audit(
    store: SetStore,
    metrics: Metrics,
    board: Board,
    every: Duration,
    heal_after: Duration,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.tick().await;
    loop {
        tick.tick().await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.audit_healing_after(heal_after)).await {
            Ok(Ok(a)) => {
                metrics.record_audit(&a);
                let found = (a.members_missing
                    + a.members_unexpected
                    + a.sets_missing
                    + a.sets_wrong_type
                    + a.mirror_entries_wrong) as u64;
                let flagged: usize = a.missing_mirrored.values().map(|m| m.len()).sum();
                board.update(|b| {
                    b.drift_found += found;
                    b.drift_healed += found.saturating_sub(flagged as u64);
                });
                if a.drifted() {
                    tracing::warn!(
                        members_missing = a.members_missing,
                        members_unexpected = a.members_unexpected,
                        sets_missing = a.sets_missing,
                        sets_wrong_type = a.sets_wrong_type,
                        mirror_entries_wrong = a.mirror_entries_wrong,
                        flagged_in_mirror = flagged,
                        "set drift: {a} (healed once older than --audit-heal-delay)"
                    );
                }
            }
            Ok(Err(e)) => tracing::error!("audit failed: {e:#}"),
            Err(e) => tracing::error!("audit task failed: {e}"),
        }
    }
}

async fn policy_counters(metrics: Metrics) {
    let mut tick = tokio::time::interval(POLICY_COUNTERS_EVERY);
    loop {
        tick.tick().await;
        match tokio::task::spawn_blocking(policies::denied_packets).await {
            Ok(Ok(c)) => metrics.record_policy_denied(&c),
            Ok(Err(e)) => tracing::warn!("reading the policy counters: {e:#}"),
            Err(e) => tracing::warn!("policy counter task failed: {e}"),
        }
    }
}

/// Reads the refusals' counters only while some frontend waits for a
/// local endpoint: otherwise there is no such rule, and a dump of the
/// filter tables (thousands of policy rules) every 5 s would find none.
async fn no_local_endpoint_counters(metrics: Metrics, view: services::ServicesView) {
    let mut tick = tokio::time::interval(POLICY_COUNTERS_EVERY);
    loop {
        tick.tick().await;
        if !view.has_unserved() {
            continue;
        }
        match tokio::task::spawn_blocking(services::no_local_endpoint_packets).await {
            Ok(Ok(c)) => metrics.record_no_local_endpoint(&c),
            Ok(Err(e)) => tracing::warn!("reading the no-local-endpoint counters: {e:#}"),
            Err(e) => tracing::warn!("no-local-endpoint counter task failed: {e}"),
        }
    }
}

/// Metrics, plus the ready file once every controller has synced fully.
struct Observer {
    metrics: Metrics,
    ready_file: Option<PathBuf>,
    board: Board,
    source: Arc<dyn Source>,
}

impl SyncObserver for Observer {
    fn queued(&self, controller: &'static str) {
        self.metrics.sync.queued(controller);
    }

    fn synced(
        &self,
        controller: &'static str,
        kind: SyncKind,
        reason: Option<FullReason>,
        duration: Duration,
        result: &Result<SyncDone, SyncError>,
    ) {
        self.board.update(|b| {
            let c = b.controllers.entry(controller).or_default();
            c.syncs += 1;
            match result {
                Ok(done) => {
                    let record = Some(SyncRecord {
                        at: SystemTime::now(),
                        duration,
                        summary: done.summary.clone(),
                    });
                    match kind {
                        SyncKind::Full => c.last_full = record,
                        SyncKind::Partial => c.last_partial = record,
                    }
                    c.last_error = None;
                }
                Err(e) => {
                    c.failures += 1;
                    c.last_error = Some(e.to_string());
                }
            }
        });
        self.metrics.record_sync(
            controller,
            kind == SyncKind::Full,
            match result {
                Ok(done) => Ok((&done.counts, duration)),
                Err(e) => Err(e.metric_label()),
            },
        );
        let was_ready = self.metrics.ready();
        self.metrics
            .sync
            .synced(controller, kind, reason, duration, result);
        if !was_ready && self.metrics.ready() {
            tracing::info!("every controller has programmed the kernel: ready");
            if let Some(f) = &self.ready_file {
                if let Err(e) = std::fs::write(f, b"ready\n") {
                    tracing::error!("writing {}: {e}", f.display());
                }
            }
        }
    }

    fn source_health(&self, resource: &str, error: Option<&str>) {
        self.metrics.sync.source_health(resource, error);
        self.board.update(|b| match error {
            Some(e) => {
                b.source_problems
                    .insert(resource.to_string(), e.to_string());
            }
            None => {
                b.source_problems.remove(resource);
            }
        });
        let mut by_kind = std::collections::BTreeMap::new();
        for u in self.source.unreadable() {
            *by_kind.entry(u.kind.to_string()).or_insert(0) += 1;
        }
        self.metrics.set_unreadable(&by_kind);
    }

    fn overlapped(&self, controller: &'static str) {
        self.metrics.sync.overlapped(controller);
    }
}

/// The policy controller, its first chain write after the services' first
/// sync when both run.
fn after_services(
    sync: PolicySync<RealDataplane>,
    first_write: Option<FirstWrite>,
) -> PolicySync<RealDataplane> {
    match first_write {
        Some(latch) => sync.after_first_service_sync(latch),
        None => sync,
    }
}
