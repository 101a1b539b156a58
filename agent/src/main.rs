use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ipwarden::cli;

#[derive(Parser)]
#[command(name = "ipwarden", version, about)]
struct Cli {
    /// `text` for people (colour only on a terminal), `json` for a log
    /// pipeline: one object per line, the fields as fields.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "IPWARDEN_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: cli::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reconcile this network namespace's kernel with the cluster: IPVS
    /// services, VIPs on ipwarden0, the service sets and the VIP firewall.
    Run(Box<cli::run::Args>),
    /// Show the tc classifier counting and marking real packets between two
    /// throw-away network namespaces (built with the `lab` feature only).
    #[cfg(feature = "lab")]
    Demo(cli::demo::Args),
    /// Remove everything ipwarden created: pins, links, chains, sets, IPVS
    /// services, VIPs and ipwarden0.
    Cleanup(cli::cleanup::Args),
    /// The eBPF data plane's pinned maps.
    #[command(subcommand)]
    Bpf(BpfCommand),
    /// The set-store race harness, in its own network namespace (built
    /// with the `lab` feature only).
    #[cfg(feature = "lab")]
    Race(cli::race::Args),
    /// Why a new connection to a VIP is accepted, rescued or refused, or
    /// which NetworkPolicies isolate a pod and what they allow.
    Explain(cli::explain::Args),
    /// The running agent's controllers, syncs, drift and eBPF attachments.
    Status(cli::status::Args),
    /// Read-only inspection of what the kernel holds.
    #[command(subcommand)]
    Kernel(KernelCommand),
}

#[derive(Subcommand)]
enum BpfCommand {
    /// The mirror with its hit counters, the config and the totals.
    Dump(cli::bpf_dump::Args),
}

#[derive(Subcommand)]
enum KernelCommand {
    /// ipsets (all, or one by name), as `ipset save` would show them.
    Ipset(cli::kernel_ipset::Args),
    /// IPVS services and their destinations.
    Ipvs(cli::kernel_ipvs::Args),
}

fn main() -> ExitCode {
    ipwarden::malloc::tune();
    let cli = Cli::parse();
    cli::logging::init(cli.log_format);
    cli::panics::exit_on_panic();
    let result = match cli.command {
        Command::Run(a) => cli::run::run(&a),
        #[cfg(feature = "lab")]
        Command::Demo(a) => cli::demo::run(&a),
        #[cfg(feature = "lab")]
        Command::Race(a) => cli::race::run(&a),
        Command::Cleanup(a) => cli::cleanup::run(&a),
        Command::Bpf(BpfCommand::Dump(a)) => cli::bpf_dump::run(&a),
        Command::Explain(a) => cli::explain::run(&a),
        Command::Status(a) => cli::status::run(&a),
        Command::Kernel(KernelCommand::Ipset(a)) => cli::kernel_ipset::run(&a),
        Command::Kernel(KernelCommand::Ipvs(a)) => cli::kernel_ipvs::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipwarden: error: {e:#}");
            // A bad flag, as clap's own errors.
            if e.downcast_ref::<cli::flags::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
