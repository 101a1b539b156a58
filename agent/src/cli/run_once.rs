//! `ipwarden run --once`: read the cluster, program both controllers in
//! one pass, report and exit (0 on success).
//!
//! Strict: a document or object that cannot be read makes it exit non-zero
//! before anything is started or written, so the kernel stays as the last
//! run left it.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{
    api::Metrics,
    cluster::{
        kube::KubeSource, manifests, unreadable::Unreadable, Change, HostInfo, Snapshot, Source,
    },
    reconcile::{ReconcileReport, Reconciler},
};

use super::run::{Args, Setup};

pub fn run(args: &Args) -> Result<()> {
    let node_name = super::run::node_name(args)?;
    let input = match &args.manifests {
        Some(path) => Input::Manifests(read_manifests(path)?),
        None => Input::Kube(KubeInput::start(args, &node_name)?),
    };
    if let Input::Kube(k) = &input {
        refuse_unreadable(&k.source.unreadable())?;
    }
    let setup = super::run::setup(args)?;
    let Setup {
        node_name,
        store,
        metrics,
        bpf,
        proxy,
        firewall,
    } = setup;
    let mut reconciler =
        Reconciler::new(store, proxy, firewall).context("starting the controllers")?;
    if let Some(rt) = bpf {
        reconciler = reconciler.with_bpf(rt);
    }
    pass(&mut reconciler, args, &node_name, &metrics, &input)?;
    if let Some(ready) = &args.ready_file {
        std::fs::write(ready, b"ready\n")
            .with_context(|| format!("writing {}", ready.display()))?;
    }
    Ok(())
}

/// Every document of `path`, or an error naming each one that cannot be
/// read.
fn read_manifests(path: &std::path::Path) -> Result<manifests::Loaded> {
    let loaded = manifests::load(path)
        .with_context(|| format!("reading manifests from {}", path.display()))?;
    if loaded.problems.is_empty() {
        return Ok(loaded);
    }
    for p in &loaded.problems {
        tracing::error!("{p}");
    }
    let list: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
    bail!(
        "{} problems: {} document(s) cannot be read, nothing was changed: {}",
        loaded.problems.len(),
        loaded.problems.len(),
        list.join("; ")
    )
}

/// The API server served objects that cannot be read: nothing is changed.
fn refuse_unreadable(unreadable: &[Unreadable]) -> Result<()> {
    if unreadable.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unreadable
        .iter()
        .map(|u| format!("{} ({})", u.object(), u.error))
        .collect();
    bail!(
        "{} problems: {} object(s) cannot be read, nothing was changed: {}",
        unreadable.len(),
        unreadable.len(),
        list.join("; ")
    )
}

/// Where the cluster comes from: exactly one source.
enum Input {
    Manifests(manifests::Loaded),
    /// The API server's reflectors, on a runtime of their own.
    Kube(KubeInput),
}

struct KubeInput {
    // Dropped before the runtime: the reflector tasks are aborted first.
    source: KubeSource,
    _runtime: tokio::runtime::Runtime,
}

/// How long `--once` waits for the first complete list.
const ONCE_READY_WITHIN: Duration = Duration::from_secs(60);

impl KubeInput {
    /// Connects, starts the reflectors and waits until every kind is listed
    /// (never act on a cold cache).
    fn start(args: &Args, node_name: &str) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ipwarden-kube")
            .enable_all()
            .build()
            .context("starting the API client's runtime")?;
        let client = runtime.block_on(crate::cluster::kube::client(
            args.kubeconfig.as_deref(),
            args.master.as_deref(),
        ))?;
        let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
        let source = {
            let _enter = runtime.enter();
            KubeSource::start(client, node_name, tx)
        };
        tracing::info!("waiting until every kind is listed");
        let within = args.once.then_some(ONCE_READY_WITHIN);
        let ready = runtime.block_on(async {
            let wait = async {
                while let Some(change) = changes.recv().await {
                    if change == Change::Ready {
                        return true;
                    }
                }
                false
            };
            match within {
                Some(t) => tokio::time::timeout(t, wait).await.unwrap_or(false),
                None => wait.await,
            }
        });
        if !ready {
            let failing: Vec<String> = source
                .failing()
                .into_iter()
                .map(|(r, e)| format!("{r}: {e}"))
                .collect();
            bail!(
                "the API server's objects were not all listed within {}s{}",
                ONCE_READY_WITHIN.as_secs(),
                if failing.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", failing.join("; "))
                }
            );
        }
        Ok(Self {
            source,
            _runtime: runtime,
        })
    }
}

/// Reads the cluster and reconciles once.
fn pass(
    reconciler: &mut Reconciler,
    args: &Args,
    node_name: &str,
    metrics: &Metrics,
    input: &Input,
) -> Result<()> {
    let host = HostInfo {
        node_name: node_name.to_string(),
        local_addresses: reconciler.local_addresses()?,
    };
    let snapshot = match input {
        Input::Manifests(loaded) => Snapshot::from_objects(loaded.objects.clone(), host),
        Input::Kube(k) => k.source.snapshot(&host).with_context(|| {
            let failing: Vec<String> = k
                .source
                .failing()
                .into_iter()
                .map(|(r, e)| format!("{r}: {e}"))
                .collect();
            format!("the cluster view is not complete ({})", failing.join("; "))
        })?,
    };
    if args.run_service_proxy && snapshot.node.is_none() {
        tracing::warn!(
            node = node_name,
            "no Node object of this name: NodePorts have no address"
        );
    }
    let report = match reconciler.reconcile(&snapshot) {
        Ok(r) => {
            metrics.record_reconcile(&Ok(&r));
            r
        }
        Err(e) => {
            metrics.record_reconcile(&Err(e.metric_label()));
            return Err(e.into());
        }
    };
    for p in &report.problems {
        tracing::warn!("{p}");
    }
    tracing::info!("{}", report.summary());
    if args.json {
        println!("{}", json(&report));
    } else if args.once {
        println!("{}", report.summary());
    }
    let policy_sets = report.policies.as_ref().and_then(|p| p.sets.as_ref());
    if report.sets.iter().chain(policy_sets).any(|s| !s.verified) {
        bail!("the sets read back differently from what was written (another writer?)");
    }
    Ok(())
}

fn json(r: &ReconcileReport) -> serde_json::Value {
    let sets = r.sets.as_ref().map(|s| &s.executed);
    serde_json::json!({
        "virtual_services": r.virtual_services,
        "ipvs": {
            "services_added": r.ipvs.services_added,
            "services_edited": r.ipvs.services_edited,
            "services_removed": r.ipvs.services_removed,
            "services_unchanged": r.ipvs.services_unchanged,
            "destinations_added": r.ipvs.destinations_added,
            "destinations_edited": r.ipvs.destinations_edited,
            "destinations_removed": r.ipvs.destinations_removed,
        },
        "sets": {
            "created": sets.map(|s| s.created.clone()).unwrap_or_default(),
            "members_added": sets.map_or(0, |s| s.members_added),
            "members_deleted": sets.map_or(0, |s| s.members_deleted),
        },
        "addresses": {
            "added": r.addresses.added.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "removed": r.addresses.removed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
        "chains_written": r.chains_written,
        "policies": r.policies.as_ref().map(policies_json),
        "problems": r.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "duration_ms": r.duration.as_secs_f64() * 1e3,
    })
}

fn policies_json(p: &crate::reconcile::PolicyReport) -> serde_json::Value {
    let sets = p.sets.as_ref().map(|s| &s.executed);
    serde_json::json!({
        "sets_created": sets.map(|s| s.created.len()).unwrap_or_default(),
        "members_added": sets.map_or(0, |s| s.members_added),
        "members_deleted": sets.map_or(0, |s| s.members_deleted),
        "sets_destroyed": p.sets_destroyed.len() + sets.map_or(0, |s| s.destroyed.len()),
        "chains_written": p.chains_written,
        "chains_deleted": p.chains_deleted,
    })
}
