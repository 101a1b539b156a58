//! `ipwarden run`: reconcile the kernel of this network namespace with the
//! cluster, once (`--once`) or until stopped.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};

use ipwarden_common::{names, Mode};

use crate::{
    api::{self, state::StatusView, Metrics, Routes},
    bpf::{
        self,
        runtime::{BpfOptions, BpfRuntime},
        PinLayout, ProgramLogLevel,
    },
    controllers::{
        policies,
        services::{self, BpfRules},
    },
    kernel::{ipset::IpsetClient, iptables::backend},
    reconcile::ProxyOptions,
    store::SetStore,
};

use super::{duration, flags, flags::UsageError, ipvs_flags::IpvsArgs};

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
    /// `FIRST-LAST` or kube-router's `FIRST:LAST`.
    #[arg(long, alias = "service-node-port-range", default_value = "30000-32767", value_parser = flags::parse_range)]
    pub node_port_range: (u16, u16),
    /// Run the IPVS service proxy (kube-router's switch; `=false` turns it off).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub run_service_proxy: bool,
    #[command(flatten)]
    pub ipvs: IpvsArgs,
    /// Enforce NetworkPolicies (kube-router's switch; `=false` turns it off).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub run_firewall: bool,
    /// ClusterIP ranges (comma-separated, both families): pod traffic to them
    /// is checked after IPVS, against the backend, not at the VIP.
    #[arg(long, value_delimiter = ',', default_value = "10.96.0.0/12", value_parser = flags::parse_cidr)]
    pub service_cluster_ip_range: Vec<ipnet::IpNet>,
    /// Hairpin for every Service (kube-router's flag): a pod reaching its
    /// own Service and balanced to itself is masqueraded, so it answers.
    /// Without it, per Service with the annotation
    /// `kube-router.io/service.hairpin` (or `ipwarden.io/service.hairpin`).
    #[arg(long)]
    pub hairpin_mode: bool,
    /// NodePorts on every address of the node (kube-router's flag), not
    /// only its InternalIP (else ExternalIP) per family.
    #[arg(long)]
    pub nodeport_bindon_all_ip: bool,
    /// External IP and LoadBalancer IP ranges, treated like ClusterIP ranges.
    #[arg(long, value_delimiter = ',', value_parser = flags::parse_cidr)]
    pub service_external_ip_range: Vec<ipnet::IpNet>,
    /// NFLOG group that denied packets are logged to (`tcpdump -i nflog:100`).
    #[arg(long, default_value_t = 100)]
    pub nflog_group: u16,
    /// Between audits of the sets (drift is counted and healed). Durations
    /// are written as kube-router's: `30s`, `5m`, `1h0m0s` (or bare seconds).
    #[arg(long, default_value = "30s", value_parser = duration::parse)]
    pub audit_interval: Duration,
    /// Heal set drift only once it has lasted this long; until then the
    /// mirror flags the missing members, so the tc program reports (log) or
    /// rescues (allow) traffic to them. 0 heals at once.
    #[arg(long, default_value = "0s", value_parser = duration::parse)]
    pub audit_heal_delay: Duration,
    /// The shortest time between two syncs of one controller: changes that
    /// arrive meanwhile are handled together (kube-proxy's debounce).
    #[arg(long, default_value = "1s", value_parser = duration::parse)]
    pub min_sync_period: Duration,
    /// Between full syncs of the service proxy, which read every IPVS
    /// service, set and address back and repair drift (kube-router's flag).
    /// A full sync reads every set's header and entry count and the members
    /// of a share of the sets in turn: a member swapped for another (the
    /// count kept) or a set of ours another program created is repaired
    /// within 10 full syncs, any other set drift at the next.
    #[arg(long, default_value = "5m", value_parser = duration::parse)]
    pub ipvs_sync_period: Duration,
    /// Between full syncs of the policy controller (kube-router's flag);
    /// its sets are read back as --ipvs-sync-period says.
    #[arg(long, default_value = "5m", value_parser = duration::parse)]
    pub iptables_sync_period: Duration,
    /// /healthz fails when a controller has had work queued this long
    /// without a successful sync (kube-proxy's rule).
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    pub healthz_queued_limit: Duration,
    /// /healthz fails while a resource of the source has not completed its
    /// first list this long after start (RBAC missing, API server
    /// unreachable, a manifest that never parsed), naming it and why.
    #[arg(long, default_value = "5m", value_parser = duration::parse)]
    pub source_list_deadline: Duration,
    /// Write this file once every controller has programmed the kernel (its
    /// first full sync).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Address of /metrics (kube-proxy's flag), for Prometheus; "off" for
    /// none. May equal --healthz-bind-address (one listener). Not started
    /// with --once.
    #[arg(
        long,
        env = "IPWARDEN_METRICS_BIND_ADDRESS",
        default_value = "0.0.0.0:20244"
    )]
    pub metrics_bind_address: String,
    /// Address of /healthz and /readyz (kube-proxy's flag), for the
    /// kubelet's probes; "off" for none.
    #[arg(
        long,
        env = "IPWARDEN_HEALTHZ_BIND_ADDRESS",
        default_value = "0.0.0.0:20244"
    )]
    pub healthz_bind_address: String,
    /// Address of /state (every Service, isolated pod and policy rule) and
    /// of the rest, for `ipwarden status` and `ipwarden explain`: loopback
    /// only, a node address is refused; "off" for none.
    #[arg(long, env = "IPWARDEN_STATUS_BIND_ADDRESS", default_value = STATUS_ADDR)]
    pub status_bind_address: String,
    /// Sets both --metrics-bind-address and --healthz-bind-address (the
    /// flag before they were split).
    #[arg(long, env = "IPWARDEN_API_ADDR", hide = true)]
    pub api_addr: Option<String>,
    /// The iptables backend our chains go to: auto (the one the node's
    /// rules are in, as Kubernetes' iptables-wrapper finds it), nft or
    /// legacy.
    #[arg(long, env = "IPWARDEN_IPTABLES_BACKEND", default_value = "auto")]
    pub iptables_backend: backend::Choice,
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
    /// The eBPF object; default: the image's
    /// (/usr/lib/ipwarden/ipwarden.bpf.o), else where `cargo xtask
    /// build-ebpf` puts it in the checkout this binary was built from.
    #[arg(long, env = "IPWARDEN_BPF_OBJECT")]
    pub bpf_object: Option<PathBuf>,
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

/// What both ways of running share: the node, the store, the eBPF data
/// plane and the controllers' settings.
pub(super) struct Setup {
    pub node_name: String,
    pub store: SetStore,
    pub metrics: Metrics,
    pub bpf: Option<BpfRuntime>,
    pub proxy: Option<ProxyOptions>,
    pub firewall: Option<policies::Options>,
}

pub fn run(args: &Args) -> Result<()> {
    check(args)?;
    if args.once {
        select_backend(args);
        super::run_once::run(args)
    } else {
        super::run_daemon::run(args)
    }
}

/// The iptables backend, from the flag or detected, logged once.
pub(super) fn select_backend(args: &Args) {
    let iptables = backend::select(args.iptables_backend);
    tracing::info!(backend = %iptables.backend, why = %iptables.why, "iptables backend");
}

/// Combinations of flags that cannot work, refused before anything starts.
fn check(args: &Args) -> Result<(), UsageError> {
    if !args.run_service_proxy && !args.run_firewall {
        return Err(UsageError(
            "--run-service-proxy=false and --run-firewall=false leave nothing to run; keep at least one"
                .into(),
        ));
    }
    listeners(args, None)?;
    if let Some(m) = &args.master {
        flags::master_url(m).map_err(UsageError)?;
    }
    Ok(())
}

/// `--node-name`, else the hostname.
pub(super) fn node_name(args: &Args) -> Result<String> {
    Ok(match &args.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .context("reading the hostname for --node-name")?
            .to_string_lossy()
            .into_owned(),
    })
}

pub(super) fn setup(args: &Args) -> Result<Setup> {
    let node_name = node_name(args)?;
    let store = SetStore::new(IpsetClient::new().context("opening the ipset netlink socket")?);
    let mode = match args.bpf.bpf_mode {
        BpfMode::Off => None,
        BpfMode::Log => Some(Mode::Log),
        BpfMode::Allow => Some(Mode::Allow),
    };
    let metrics = Metrics::new();
    let bpf = match mode.filter(|_| args.run_service_proxy) {
        None => None,
        Some(mode) => Some(
            BpfRuntime::start(
                BpfOptions {
                    mode,
                    mark: args.bpf.bpf_mark,
                    object: bpf::find_object(args.bpf.bpf_object.as_deref()).context(
                        "finding the eBPF object (use --bpf-mode off to run without it)",
                    )?,
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
        ipvs: args.ipvs.settings(),
        services: services::Options {
            bpf: mode.map(|mode| BpfRules {
                mode,
                mark: args.bpf.bpf_mark,
            }),
            hairpin_all: args.hairpin_mode,
            nodeport_bindon_all_ip: args.nodeport_bindon_all_ip,
            node_port_range: Some(args.node_port_range),
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
    Ok(Setup {
        node_name,
        store,
        metrics,
        bpf,
        proxy,
        firewall,
    })
}

/// The status address's default, which `status` and `explain` ask.
pub const STATUS_ADDR: &str = "127.0.0.1:20246";

/// Each address to listen on with what it serves; two flags naming one
/// address share a listener. A status address off loopback is refused.
fn listeners(
    args: &Args,
    view: Option<StatusView>,
) -> Result<BTreeMap<SocketAddr, Routes>, UsageError> {
    let (metrics_at, healthz_at) = match &args.api_addr {
        Some(both) => (both, both),
        None => (&args.metrics_bind_address, &args.healthz_bind_address),
    };
    let state = Routes {
        metrics: true,
        health: true,
        state: view,
    };
    let wanted = [
        (
            "--metrics-bind-address",
            metrics_at,
            Routes {
                metrics: true,
                ..Routes::default()
            },
        ),
        (
            "--healthz-bind-address",
            healthz_at,
            Routes {
                health: true,
                ..Routes::default()
            },
        ),
        ("--status-bind-address", &args.status_bind_address, state),
    ];
    let mut out: BTreeMap<SocketAddr, Routes> = BTreeMap::new();
    for (flag, at, routes) in wanted {
        if at == "off" {
            continue;
        }
        let addr = flags::resolve_addr(at).map_err(|e| UsageError(format!("{flag} {e}")))?;
        if flag == "--status-bind-address" && !addr.ip().is_loopback() {
            return Err(UsageError(format!(
                "{flag} {at}: /state describes the cluster and is served on loopback only (such as {STATUS_ADDR})"
            )));
        }
        let merged = match out.remove(&addr) {
            Some(before) => before.merge(routes),
            None => routes,
        };
        out.insert(addr, merged);
    }
    Ok(out)
}

/// Starts the listeners of `--metrics-bind-address`,
/// `--healthz-bind-address` and `--status-bind-address`.
pub(super) fn serve_api(args: &Args, metrics: &Metrics, view: StatusView) -> Result<()> {
    for (addr, routes) in listeners(args, Some(view))? {
        let paths = routes.paths().join(", ");
        let bound = api::serve(addr, metrics.clone(), routes)
            .with_context(|| format!("serving {paths} on {addr}"))?;
        tracing::info!(%bound, "serving {paths}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{Args as _, Command};

    #[test]
    fn the_help_says_how_many_full_syncs_the_set_scrub_takes() {
        let help = super::Args::augment_args(Command::new("run"))
            .render_long_help()
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let said = format!("within {} full syncs", crate::store::SCRUB_PERIODS);
        assert!(help.contains(&said), "{help}");
    }
}
