//! `ipwarden run`: reconcile the kernel of this network namespace with the
//! cluster, once (`--once`) or until stopped.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context, Result};

use ipwarden_common::{names, Mode};

use crate::{
    api::{self, Metrics},
    bpf::{
        self,
        runtime::{BpfOptions, BpfRuntime},
        PinLayout, ProgramLogLevel,
    },
    cluster::{kube::KubeSource, manifests, Change, HostInfo, Snapshot, Source},
    controllers::{
        policies,
        services::{self, BpfRules},
    },
    kernel::ipset::IpsetClient,
    reconcile::{ProxyOptions, ReconcileReport, Reconciler},
    store::SetStore,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A file or folder of Kubernetes manifests (YAML or JSON, several
    /// documents per file, `kind: List`), re-read when it changes. Without
    /// it the cluster comes from the API server.
    #[arg(long, env = "IPWARDEN_MANIFESTS", conflicts_with_all = ["kubeconfig", "master"])]
    pub manifests: Option<PathBuf>,
    /// The kubeconfig to reach the API server (kube-router's flag); default:
    /// $KUBECONFIG, ~/.kube/config, then the pod's service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The API server's URL (kube-router's flag); overrides the kubeconfig's.
    #[arg(long)]
    pub master: Option<String>,
    /// Apply once and exit: 0 on success, non-zero with the reason otherwise.
    #[arg(long)]
    pub once: bool,
    /// This node's name (its Node object and its endpoints); default: hostname.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The NodePort range, as kube-apiserver's --service-node-port-range.
    #[arg(long, alias = "service-node-port-range", default_value = "30000-32767", value_parser = parse_range)]
    pub node_port_range: (u16, u16),
    /// Run the IPVS service proxy (kube-router's switch; `=false` turns it off).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub run_service_proxy: bool,
    /// Enforce NetworkPolicies (kube-router's switch; `=false` turns it off).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub run_firewall: bool,
    /// ClusterIP ranges (comma-separated, both families): pod traffic to them
    /// is checked after IPVS, against the backend, not at the VIP.
    #[arg(long, value_delimiter = ',', default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: Vec<ipnet::IpNet>,
    /// External IP and LoadBalancer IP ranges, treated like ClusterIP ranges.
    #[arg(long, value_delimiter = ',')]
    pub service_external_ip_range: Vec<ipnet::IpNet>,
    /// NFLOG group that denied packets are logged to (`tcpdump -i nflog:100`).
    #[arg(long, default_value_t = 100)]
    pub nflog_group: u16,
    /// Seconds between audits of the sets (drift is counted and healed).
    #[arg(long, default_value_t = 30)]
    pub audit_interval: u64,
    /// Heal set drift only once it has lasted this many seconds; until then
    /// the mirror flags the missing members, so the tc program reports (log)
    /// or rescues (allow) traffic to them. 0 heals at once.
    #[arg(long, default_value_t = 0)]
    pub audit_heal_delay: u64,
    /// Write this file once the first pass has programmed the kernel.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz; "off" for none. Not
    /// started with --once.
    #[arg(long, env = "IPWARDEN_API_ADDR", default_value = "0.0.0.0:20244")]
    pub api_addr: String,
    /// Print the report of each pass as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub bpf: BpfArgs,
}

/// The eBPF data plane (`--bpf-*`).
#[derive(clap::Args, Debug)]
pub struct BpfArgs {
    /// off: no program; log: count and report mirrored traffic that an
    /// inconsistent ipset refuses; allow: also accept it (the rescue).
    #[arg(long, env = "IPWARDEN_BPF_MODE", default_value = "log")]
    pub bpf_mode: BpfMode,
    /// The eBPF object (built by `cargo xtask build-ebpf`).
    #[arg(long, env = "IPWARDEN_BPF_OBJECT", default_value = bpf::DEFAULT_OBJECT)]
    pub bpf_object: PathBuf,
    /// bpffs directory for pinned maps and links.
    #[arg(long, env = "IPWARDEN_BPF_PIN_DIR", default_value = names::DEFAULT_PIN_DIR)]
    pub bpf_pin_dir: PathBuf,
    /// Comma-separated interfaces; default: every interface with a global
    /// unicast address, plus ipwarden0.
    #[arg(long, env = "IPWARDEN_BPF_INTERFACES", value_delimiter = ',')]
    pub bpf_interfaces: Vec<String>,
    /// The skb->mark bit the program sets on mirrored traffic.
    #[arg(long, default_value_t = names::DEFAULT_MARK, value_parser = parse_mark)]
    pub bpf_mark: u32,
    /// Level of the program's own log lines.
    #[arg(long, default_value = "info")]
    pub bpf_log_level: ProgramLogLevel,
    /// Append every event (5-tuple) as a JSON line to this file.
    #[arg(long)]
    pub bpf_events_log: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BpfMode {
    Off,
    Log,
    Allow,
}

fn parse_mark(s: &str) -> Result<u32, String> {
    let v = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s}: {e}"))?;
    if v == 0 {
        return Err("the mark must have at least one bit set".into());
    }
    Ok(v)
}

pub(crate) fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').ok_or("expected FIRST-LAST")?;
    let a: u16 = a.trim().parse().map_err(|e| format!("{a}: {e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("{b}: {e}"))?;
    if a > b {
        return Err(format!("{a} is above {b}"));
    }
    Ok((a, b))
}

/// How often the denied-packet counters of the pod chains are read.
const POLICY_COUNTERS_EVERY: Duration = Duration::from_secs(5);

pub fn run(args: &Args) -> Result<()> {
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .context("reading the hostname for --node-name")?
            .to_string_lossy()
            .into_owned(),
    };
    let store = SetStore::new(IpsetClient::new().context("opening the ipset netlink socket")?);
    let mode = match args.bpf.bpf_mode {
        BpfMode::Off => None,
        BpfMode::Log => Some(Mode::Log),
        BpfMode::Allow => Some(Mode::Allow),
    };
    let metrics = Metrics::new();
    let bpf_runtime = match mode.filter(|_| args.run_service_proxy) {
        None => None,
        Some(mode) => Some(
            BpfRuntime::start(
                BpfOptions {
                    mode,
                    mark: args.bpf.bpf_mark,
                    object: args.bpf.bpf_object.clone(),
                    pins: PinLayout::new(&args.bpf.bpf_pin_dir),
                    interfaces: args.bpf.bpf_interfaces.clone(),
                    log_level: args.bpf.bpf_log_level,
                    events_log: args.bpf.bpf_events_log.clone(),
                    events: Arc::new(metrics.bpf_events.clone()),
                },
                &store,
            )
            .context("starting the eBPF data plane (use --bpf-mode off to run without it)")?,
        ),
    };
    let proxy = args.run_service_proxy.then(|| ProxyOptions {
        node_port_range: args.node_port_range,
        services: services::Options {
            bpf: mode.map(|mode| BpfRules {
                mode,
                mark: args.bpf.bpf_mark,
            }),
        },
    });
    let firewall = args.run_firewall.then(|| policies::Options {
        nflog_group: args.nflog_group,
        service_ranges: args
            .service_cluster_ip_range
            .iter()
            .chain(&args.service_external_ip_range)
            .copied()
            .collect(),
        node_port_range: args.node_port_range,
    });
    let mut reconciler =
        Reconciler::new(store, proxy, firewall).context("starting the controllers")?;
    if let Some(rt) = bpf_runtime {
        reconciler = reconciler.with_bpf(rt);
    }

    if !args.once && args.api_addr != "off" {
        let addr = args
            .api_addr
            .parse()
            .with_context(|| format!("--api-addr {}", args.api_addr))?;
        let bound =
            api::serve(addr, metrics.clone()).with_context(|| format!("serving on {addr}"))?;
        tracing::info!(%bound, "serving /metrics, /healthz, /readyz");
    }
    let mut input = match &args.manifests {
        Some(path) => Input::Manifests {
            path: path.clone(),
            last_seen: modified(path),
        },
        None => Input::Kube(KubeInput::start(args, &node_name)?),
    };
    pass(&mut reconciler, args, &node_name, &metrics, &input)?;
    if let Some(ready) = &args.ready_file {
        std::fs::write(ready, b"ready\n")
            .with_context(|| format!("writing {}", ready.display()))?;
    }
    if args.once {
        return Ok(());
    }
    let mut last_audit = Instant::now();
    let mut last_counters = Instant::now();
    loop {
        if input.changed_within(Duration::from_secs(1)) {
            if let Err(e) = pass(&mut reconciler, args, &node_name, &metrics, &input) {
                tracing::error!("reconcile failed: {e:#}");
            }
        }
        if args.run_firewall && last_counters.elapsed() >= POLICY_COUNTERS_EVERY {
            last_counters = Instant::now();
            match crate::reconcile::policies::denied_packets() {
                Ok(c) => metrics.record_policy_denied(&c),
                Err(e) => tracing::warn!("reading the policy counters: {e:#}"),
            }
        }
        if last_audit.elapsed() >= Duration::from_secs(args.audit_interval) {
            last_audit = Instant::now();
            let delay = Duration::from_secs(args.audit_heal_delay);
            match reconciler.store().audit_healing_after(delay) {
                Ok(a) => {
                    metrics.record_audit(&a);
                    if a.drifted() {
                        tracing::warn!(
                            ?a,
                            "set drift found (healed once older than --audit-heal-delay)"
                        );
                    }
                }
                Err(e) => tracing::error!("audit failed: {e:#}"),
            }
        }
    }
}

/// Where the cluster comes from: exactly one source.
enum Input {
    /// Polled for changes (mtimes).
    Manifests {
        path: PathBuf,
        last_seen: Option<SystemTime>,
    },
    /// The API server's reflectors, on a runtime of their own.
    Kube(KubeInput),
}

struct KubeInput {
    // Dropped before the runtime: the reflector tasks are aborted first.
    source: KubeSource,
    changes: tokio::sync::mpsc::UnboundedReceiver<Change>,
    runtime: tokio::runtime::Runtime,
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
            changes,
            runtime,
        })
    }
}

impl Input {
    /// Waits up to `within` for a change of the cluster.
    fn changed_within(&mut self, within: Duration) -> bool {
        match self {
            Input::Manifests { path, last_seen } => {
                // Polling mtimes; a second is well inside any resync
                // period a proxy is expected to meet.
                std::thread::sleep(within);
                let seen = modified(path);
                let changed = seen != *last_seen;
                *last_seen = seen;
                changed
            }
            Input::Kube(k) => {
                let first = k
                    .runtime
                    .block_on(async { tokio::time::timeout(within, k.changes.recv()).await });
                let mut changed = matches!(first, Ok(Some(_)));
                while k.changes.try_recv().is_ok() {
                    changed = true;
                }
                changed
            }
        }
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
    let (snapshot, skipped) = match input {
        Input::Manifests { path, .. } => {
            let loaded = manifests::load(path)
                .with_context(|| format!("reading manifests from {}", path.display()))?;
            for p in &loaded.problems {
                tracing::warn!("skipped: {p}");
            }
            let skipped = loaded.problems.len();
            (Snapshot::from_objects(loaded.objects, host), skipped)
        }
        Input::Kube(k) => {
            let snapshot = k
                .source
                .snapshot(&host)
                .context("the API server's objects are not all listed")?;
            // Skipped objects are logged as they come; this counts them
            // since start.
            let skipped = k
                .source
                .health()
                .iter()
                .map(|h| h.skipped_objects)
                .sum::<u64>();
            (snapshot, skipped as usize)
        }
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
        println!("{}", json(&report, skipped));
    } else if args.once {
        println!("{}", report.summary());
    }
    let policy_sets = report.policies.as_ref().and_then(|p| p.sets.as_ref());
    if report.sets.iter().chain(policy_sets).any(|s| !s.verified) {
        bail!("the sets read back differently from what was written (another writer?)");
    }
    Ok(())
}

fn json(r: &ReconcileReport, skipped_documents: usize) -> serde_json::Value {
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
        "skipped_documents": skipped_documents,
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

/// The newest modification time under `path`, to notice edits.
fn modified(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| modified(&e.path()))
        .chain(meta.modified().ok())
        .max()
}
