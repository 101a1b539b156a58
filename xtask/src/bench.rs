//! `cargo xtask bench`: every benchmark in one go, written to BENCHMARKS.md.
//!
//! 1. the eBPF object is built when a selected bench loads it (the tc and
//!    agent benches);
//! 2. the bench binaries are built in release (`cargo bench --no-run`) and
//!    found through `--message-format=json`;
//! 3. each runs with its figures on stdout (markdown) and its progress on
//!    stderr, shown as it goes: `ipset`, `store`, `policies` and
//!    `tc_throughput` on the host, each in network namespaces of its own;
//!    `ipvs` and `agent` inside the IPVS VM (`cargo xtask vm-test`);
//! 4. BENCHMARKS.md gets one section per bench: what it does, the exact
//!    command, its tables, and the target checks. A bench not run this time
//!    (`--only`, `--no-vm`) keeps its section from the previous report,
//!    marked with the date and commit it was measured at.
//!
//! Every bench measures its baseline in the same run, interleaved, and
//! reports medians. Not part of `cargo xtask test`: it prints figures and
//! asserts nothing about time.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{
    build_ebpf,
    process::{self, require_root, workspace_root},
};

#[derive(clap::Args)]
pub struct Options {
    /// Fewer runs and shorter windows (a few minutes less; figures noisier).
    #[arg(long)]
    pub quick: bool,
    /// Skip the IPVS bench (it boots the VM).
    #[arg(long)]
    pub no_vm: bool,
    /// Only these benches (ipset, ipvs, store, vip_routes, policies, agent, tc_throughput); default all.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Where to write the report (default: BENCHMARKS.md at the repository root).
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

/// One benchmark: its bench target, where it runs, its settings.
struct Bench {
    name: &'static str,
    title: &'static str,
    about: &'static str,
    in_vm: bool,
    /// Loads the eBPF object (IPWARDEN_BPF_OBJECT).
    needs_object: bool,
    /// (variable, full run, --quick)
    env: &'static [(&'static str, &'static str, &'static str)],
}

const BENCHES: &[Bench] = &[
    Bench {
        name: "ipset",
        needs_object: false,
        title: "ipset: our netlink client vs the ipset CLI",
        about: "Creates a hash:ip,port set of N members and lists it back: our client \
                (`IpsetClient::create` + `add` + `list`) against `ipset restore` and \
                `ipset save` fed the same content, each run in a fresh network namespace \
                on the host, alternating. Ratio = ipset time / ours (above 1: ours is faster).",
        in_vm: false,
        env: &[("IPWARDEN_BENCH_RUNS", "5", "3")],
    },
    Bench {
        name: "ipvs",
        needs_object: false,
        title: "IPVS: our batched client vs `ipvsadm -R`",
        about: "Programs N virtual services x 3 destinations in a fresh network namespace: \
                our batched generic-netlink client against `ipvsadm -R` fed the same table \
                (and our client with one request per sendmsg), then reads the table back \
                (`list()` against `ipvsadm -Ln`). Runs inside the IPVS VM (Debian's 6.1 \
                kernel under qemu TCG, because this host has no IPVS): absolute times are \
                slow, the ratios are what matter.",
        in_vm: true,
        env: &[
            ("IPWARDEN_BENCH_SIZES", "1000,10000", "1000,10000"),
            ("IPWARDEN_BENCH_RUNS", "3", "1"),
        ],
    },
    Bench {
        name: "store",
        needs_object: false,
        title: "Set store: diff-and-apply vs kube-router's save + full restore",
        about: "One hash:ip,port set (`ipwarden-svip-prt`) of N members in a fresh network \
                namespace. The store (`SetStore::apply`: save, diff, write only the \
                difference, read back) against kube-router's `ipset.Save` + `ipset.Restore` \
                of the same state (save everything, fill a temporary set with every member, \
                swap, destroy), once through the ipset CLI and once through our client, so \
                that the second ratio isolates diff-vs-full-restore from CLI overhead. A \
                no-op apply and a one-member change (the same member toggled) per round, \
                all methods interleaved in every round. kube-router has no diff, so its \
                no-op costs what a change costs. Ratio = baseline / store. The store reads \
                the set twice per apply (the save its diff starts from, and the read-back \
                that verifies it) and handles members as text, so \"one save via our \
                client\" is the floor under its cost; only the write is proportional to \
                the change.",
        in_vm: false,
        env: &[
            (
                "IPWARDEN_BENCH_SIZES",
                "1000,10000,100000",
                "1000,10000,100000",
            ),
            ("IPWARDEN_BENCH_RUNS", "11", "5"),
        ],
    },
    Bench {
        name: "vip_routes",
        needs_object: false,
        title: "VIP routes: a full sync's VIP step vs `ip -batch`",
        about: "N VIPs as local routes of protocol 211 on the dummy (`LinkClient::sync_vips_at`: \
                one route dump, then the route requests in batches on kernel/netlink's \
                socket), the same again (nothing to write: the dump alone), one VIP added and \
                one deleted beside them (`change_vips_at`, a partial sync's step), all N \
                deleted; beside it `ip -batch` adding the same N routes, one request and ack \
                at a time. Each run in a fresh network namespace on the host.",
        in_vm: false,
        env: &[
            ("IPWARDEN_BENCH_SIZES", "1000,10000", "1000,10000"),
            ("IPWARDEN_BENCH_RUNS", "3", "1"),
        ],
    },
    Bench {
        name: "policies",
        needs_object: false,
        title: "NetworkPolicy: the policy controller vs kube-router's save + full restore",
        about: "A generated cluster (seeded): N pods in namespaces with labels, a tenth of them \
                on this node, with app/tier/role labels and named container ports, and M \
                NetworkPolicies of realistic variety (default deny, podSelector matchLabels \
                and matchExpressions of every operator, namespaceSelector, both, ipBlock with \
                except, numeric ports, endPort ranges, named ports, ingress and egress); both \
                filter tables also hold a few foreign rules. Ours, full syncs: \
                `controllers::policies::desired` (compute) then `reconcile::policies` (the set \
                store applies the sets, one `iptables-restore --noflush` per family writes the \
                changed chains), from an empty network namespace and again (no-op). Ours, \
                partial syncs as the daemon runs them: the keyed `PolicyIndex` updated with the \
                one changed pod (compute), then its delta (new sets and members through the \
                store's member path; one `iptables-restore --noflush` per family naming only the \
                moved chains and lines, no read of the table), for one remote pod's label change \
                (asserted to write no chain, only ipset add/del) and one local pod added and \
                removed (its chain and jump lines; a full sync after each must write nothing). \
                Against it, in the same rounds, interleaved, on \
                the same content: kube-router's network policy controller's way of syncing \
                (the same compute, then `iptables-save -t filter` per family, `ipset save`, \
                `ipset restore -exist` of every policy set through temporary sets and swaps, \
                and an `iptables-restore` of the whole filter table of each family, foreign \
                rules included). kube-router has no diff, so its no-op costs what a change \
                costs. Ratio = kube-router's way / ours.",
        in_vm: false,
        env: &[
            ("IPWARDEN_BENCH_PODS", "5000", "5000"),
            ("IPWARDEN_BENCH_POLICIES", "1000", "1000"),
            ("IPWARDEN_BENCH_RUNS", "7", "3"),
        ],
    },
    Bench {
        name: "agent",
        needs_object: true,
        title: "The agent on the API server: first sync, one change, no-op resync, memory",
        about: "The `ipwarden run --kubeconfig` binary as a whole process inside the IPVS VM \
                (Debian's 6.1 kernel under qemu TCG, 2 vCPUs: absolute times are several \
                times the host's), in the lab's node namespace, its real kube client listing \
                and watching the fake API server of the tests (real list/watch JSON, \
                resourceVersions) served by the bench process on that namespace's loopback. \
                The cluster: N Services of one TCP port with three ready endpoints each (one \
                EndpointSlice each), 5000 pods and 1000 NetworkPolicies of the policies \
                bench's generator, a tenth of the pods on this node. Start to ready: from the \
                agent's start to its ready file (every list done, both controllers' first full \
                sync from an empty kernel); full apply: that first full sync of each \
                controller (its `ipwarden_sync_duration_seconds`). One change: a random \
                Service gains or loses its externalIP (an IPVS service, set members, a mirror \
                entry, a VIP), one at a time, 150 ms apart; the latency runs from the moment \
                the fake server wrote the watch event to the service controller's \
                `ipwarden_sync_last_timestamp_seconds` of the sync that applied it, and \
                `ipvsadm` confirms every change. The agent runs with `--min-sync-period \
                100ms` so that the debounce never holds a change back. No-op resync: the \
                agent restarted on the programmed kernel with short sync periods, the median \
                of three periodic full syncs after the first (percent of the full apply). \
                Peak RSS: the agent's VmHWM over both runs.",
        in_vm: true,
        env: &[
            ("IPWARDEN_BENCH_SIZES", "1000,10000", "1000,10000"),
            ("IPWARDEN_BENCH_CHANGES", "240", "200"),
        ],
    },
    Bench {
        name: "tc_throughput",
        needs_object: true,
        title:
            "tc program: per-packet cost, and throughput through a veth into a network namespace",
        about: "One sender namespace joined by veth pairs to seven receiver namespaces, one \
                per configuration, so configurations are chosen by destination and \
                interleaved run by run: none; an empty tc program; the program alone; the \
                program with the rules the agent ships in allow mode; kube-router's service \
                firewall (ipsets, no program); a kube-router node (INPUT jumps first to the \
                network-policy chain with its RETURN rules and the pod firewall chains of 100 \
                local pods, then the service firewall with the svip / svip-prt sets at 10k \
                members); and the same node with ipwarden in allow mode. Every node is \
                programmed from one generated cluster by the controllers, the set store and \
                `kernel::iptables`, in the order of a pass. TCP: iperf3, one stream, and \
                request/response (64 bytes each way on 8 connections, busy-polled \
                non-blocking sockets, one segment through INPUT per request). UDP: \
                64-byte datagrams over IPv4 and IPv6, a Rust sender (sendmmsg) and \
                busy-polling receiver (recvmmsg). The receive path (tc, netfilter, UDP) runs \
                in the sending process's context, so besides wall-clock rates the bench \
                reports work per CPU-second (iperf3's CPU figures; the UDP sender thread's \
                CPU clock), which other load on the machine disturbs far less. The program's \
                time per run comes from the kernel's BPF statistics (run_time_ns / run_cnt), \
                on only in windows of their own since they cost every run two clock reads; \
                the empty program shows what they report for a program that does nothing. \
                Then fixed frames through BPF_PROG_TEST_RUN give the program's cost per kind \
                of packet, IPv6 extension headers included. The sanity lines come from \
                iptables rule counters and the mirror's hit counters after the runs.",
        in_vm: false,
        env: &[
            ("IPWARDEN_BENCH_RUNS", "5", "3"),
            ("IPWARDEN_BENCH_SECS", "3", "2"),
        ],
    },
];

/// What one bench run produced.
struct Outcome {
    command: String,
    markdown: String,
    seconds: f64,
    load_before: String,
    load_after: String,
    failed: Option<String>,
}

pub fn run(opts: &Options) -> Result<()> {
    require_root("bench")?;
    for name in &opts.only {
        if !BENCHES.iter().any(|b| b.name == name) {
            bail!(
                "no bench named {name:?} (have: {})",
                BENCHES
                    .iter()
                    .map(|b| b.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let selected: Vec<&Bench> = BENCHES
        .iter()
        .filter(|b| opts.only.is_empty() || opts.only.iter().any(|o| o == b.name))
        .filter(|b| !(b.in_vm && opts.no_vm))
        .collect();
    let started = Instant::now();
    let object = if selected.iter().any(|b| b.needs_object) {
        Some(build_ebpf::run(&build_ebpf::Options::default())?)
    } else {
        None
    };
    let exes = bench_binaries(&selected)?;

    let mut outcomes = Vec::new();
    for bench in &selected {
        let exe = exes
            .iter()
            .find(|(n, _)| n == bench.name)
            .map(|(_, p)| p.clone())
            .with_context(|| format!("cargo built no bench binary named {}", bench.name))?;
        eprintln!("xtask bench: running {}", bench.name);
        let outcome = run_one(bench, &exe, object.as_deref(), opts.quick)?;
        if let Some(e) = &outcome.failed {
            eprintln!("xtask bench: {} failed: {e}", bench.name);
        }
        outcomes.push((*bench, outcome));
    }

    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join("BENCHMARKS.md"));
    let previous = Previous::read(&out);
    let report = render(
        opts,
        &outcomes,
        previous.as_ref(),
        started.elapsed().as_secs_f64(),
    )?;
    std::fs::write(&out, report).with_context(|| format!("writing {}", out.display()))?;
    println!("xtask bench: wrote {}", out.display());
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|(_, o)| o.failed.is_some())
        .map(|(b, _)| b.name)
        .collect();
    if !failed.is_empty() {
        bail!("benches failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Builds the selected bench targets in release and returns (name, executable).
fn bench_binaries(benches: &[&Bench]) -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = Command::new("cargo");
    cmd.args([
        "bench",
        "-p",
        "ipwarden",
        "--no-run",
        "--message-format=json",
    ])
    .current_dir(workspace_root());
    for b in benches {
        cmd.args(["--bench", b.name]);
    }
    process::cargo_executables(&mut cmd, "bench")
}

fn run_one(bench: &Bench, exe: &Path, object: Option<&Path>, quick: bool) -> Result<Outcome> {
    // A variable already set (IPWARDEN_BENCH_SIZES=1000,10000,50000, say)
    // is kept and shown.
    let env: Vec<(&str, String)> = bench
        .env
        .iter()
        .map(|&(k, full, q)| {
            let default = if quick { q } else { full };
            (k, std::env::var(k).unwrap_or_else(|_| default.to_string()))
        })
        .collect();
    let exe_shown = relative(exe);
    let mut cmd;
    let mut shown = env
        .iter()
        .map(|(k, v)| format!("{k}={v} "))
        .collect::<String>();
    if let (true, Some(object)) = (bench.needs_object, object) {
        shown.push_str(&format!("IPWARDEN_BPF_OBJECT={} ", relative(object)));
    }
    if bench.in_vm {
        // `uname -r` first: the report names the guest's kernel.
        let script = format!("echo \"guest kernel: $(uname -r)\"; exec {exe_shown}");
        cmd = Command::new(std::env::current_exe().context("locating xtask")?);
        // An hour: the agent bench programs 10k Services under TCG.
        cmd.args(["vm-test", "--timeout", "3600", "--", "sh", "-c", &script]);
        shown.push_str(&format!(
            "cargo xtask vm-test --timeout 3600 -- sh -c '{script}'"
        ));
    } else {
        cmd = Command::new(exe);
        shown.push_str(&exe_shown);
    }
    cmd.current_dir(workspace_root())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    if let Some(object) = object {
        cmd.env("IPWARDEN_BPF_OBJECT", object);
    }
    eprintln!("xtask bench: {shown}");
    let load_before = loadavg();
    let start = Instant::now();
    let (stdout, status) = tee(&mut cmd)?;
    let seconds = start.elapsed().as_secs_f64();
    let load_after = loadavg();
    let mut failed = (!status.success()).then(|| format!("exited with {status}"));
    if failed.is_none() && !stdout.lines().any(|l| l.starts_with('|')) {
        // A bench that skips (no root, no IPVS) exits 0 without a table.
        failed = Some("printed no table (skipped?)".to_string());
    }
    let markdown = if bench.in_vm {
        // The VM merges the guest's stdout and stderr: keep the table and
        // the guest kernel line, drop the progress lines.
        let mut md = String::new();
        for l in stdout.lines() {
            if let Some(k) = l.strip_prefix("guest kernel: ") {
                md.push_str(&format!("Guest kernel: {k} (qemu TCG, 2 vCPUs)\n\n"));
            }
        }
        // Tables apart: a line between two tables ends the first.
        let mut table: Vec<&str> = Vec::new();
        let mut in_table = false;
        for l in stdout.lines() {
            let row = l.starts_with('|');
            if row && !in_table && !table.is_empty() {
                table.push("");
            }
            if row {
                table.push(l);
            }
            in_table = row;
        }
        md.push_str(&table.join("\n"));
        md.push('\n');
        let targets: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("- target"))
            .collect();
        if !targets.is_empty() {
            md.push_str(&format!("\n{}\n", targets.join("\n")));
        }
        if let Some(line) = ipvs_target(&table) {
            md.push_str(&format!("\n{line}\n"));
        }
        md
    } else {
        stdout
    };
    Ok(Outcome {
        command: shown,
        markdown,
        seconds,
        load_before,
        load_after,
        failed,
    })
}

/// Runs `cmd`, echoing its stdout to our stderr line by line as it comes
/// (its stderr is inherited) and returning it.
fn tee(cmd: &mut Command) -> Result<(String, std::process::ExitStatus)> {
    let shown = process::describe(cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let mut captured = String::new();
    let reader = BufReader::new(child.stdout.take().context("child stdout")?);
    for line in reader.lines() {
        let line = line.with_context(|| format!("reading the output of `{shown}`"))?;
        eprintln!("  {line}");
        captured.push_str(&line);
        captured.push('\n');
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{shown}`"))?;
    Ok((captured, status))
}

/// "- target ..." for the 10k row of the IPVS table (add speed-up >= 3x).
fn ipvs_target(table: &[&str]) -> Option<String> {
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let header = cells(table.first()?);
    let col = header.iter().position(|h| h == "speed-up")?;
    let row = table
        .iter()
        .map(|l| cells(l))
        .find(|c| c.first().is_some_and(|n| n == "10000"))?;
    let speedup: f64 = row.get(col)?.trim_end_matches('x').parse().ok()?;
    Some(format!(
        "- target ours >= 3x faster than `ipvsadm -R` at 10k services: {speedup:.1}x ({})",
        if speedup >= 3.0 { "met" } else { "missed" }
    ))
}

/// How a section kept from an earlier report starts.
const KEPT: &str = "Kept from an earlier run";

/// The report being replaced: its sections, to keep those of benches not
/// run this time, and when it was written.
struct Previous {
    date: String,
    commit: String,
    /// (title, body) in order.
    sections: Vec<(String, String)>,
}

impl Previous {
    fn read(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let date = text
            .lines()
            .find_map(|l| l.split_once(") on ")?.1.split_once(", in "))
            .map_or("?".to_string(), |(d, _)| d.to_string());
        let commit = text
            .lines()
            .find_map(|l| l.strip_prefix("| commit | "))
            .map_or("?".to_string(), |c| c.trim_end_matches(" |").to_string());
        let mut sections = Vec::new();
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            if let Some(title) = line.strip_prefix("## ") {
                sections.extend(current.take());
                current = Some((title.to_string(), String::new()));
            } else if let Some((_, body)) = current.as_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        sections.extend(current);
        Some(Self {
            date,
            commit,
            sections,
        })
    }

    /// The body of `bench`'s measured section (found by its build command,
    /// which survives a change of title), marked as kept.
    fn kept(&self, bench: &Bench) -> Option<String> {
        let marker = format!("--bench {}`", bench.name);
        let body = self
            .sections
            .iter()
            .find(|(_, body)| body.contains(&marker))
            .map(|(_, body)| body.trim())?;
        if body.starts_with(KEPT) {
            return Some(body.to_string());
        }
        Some(format!(
            "{KEPT} (the report written on {}, commit {}): not run this time.\n\n{body}",
            self.date, self.commit
        ))
    }
}

fn render(
    opts: &Options,
    outcomes: &[(&Bench, Outcome)],
    previous: Option<&Previous>,
    total: f64,
) -> Result<String> {
    let mut md = String::new();
    let date = sh("date -u '+%Y-%m-%d %H:%M UTC'");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = sh("git rev-parse --short HEAD");
    let dirty = if sh("git status --porcelain --untracked-files=no").is_empty() {
        ""
    } else {
        " (with uncommitted changes)"
    };
    let mut invocation = "cargo xtask bench".to_string();
    if opts.quick {
        invocation.push_str(" --quick");
    }
    if opts.no_vm {
        invocation.push_str(" --no-vm");
    }
    if !opts.only.is_empty() {
        invocation.push_str(&format!(" --only {}", opts.only.join(",")));
    }

    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Written by `{invocation}` (as root) on {date}, in {total:.0} s. Every figure is a \
         median of several runs, and every baseline was measured in the same run as what it \
         is compared with, interleaved. Re-run `cargo xtask bench` to refresh this file; \
         `--quick` does fewer runs.\n"
    )?;
    writeln!(md, "| | |\n|---|---|")?;
    writeln!(md, "| host kernel | {kernel} |")?;
    writeln!(md, "| CPU | {cpus} x {cpu} |")?;
    writeln!(md, "| commit | {commit}{dirty} |")?;
    for (label, cmd) in [
        ("ipset", "ipset version"),
        ("iptables", "iptables -V"),
        ("ipvsadm", "dpkg-query -W -f='${Version}' ipvsadm"),
        ("iperf3", "iperf3 --version"),
    ] {
        let v = sh(&format!("{cmd} 2>&1 | head -1"));
        if !v.is_empty() {
            writeln!(md, "| {label} | {v} |")?;
        }
    }
    writeln!(md)?;
    // Each bench's section: measured now, kept from the previous report,
    // or neither.
    let sections: Vec<(&Bench, Option<&Outcome>, Option<String>)> = BENCHES
        .iter()
        .map(|b| {
            let outcome = outcomes
                .iter()
                .find(|(o, _)| o.name == b.name)
                .map(|(_, o)| o);
            let kept = outcome
                .is_none()
                .then(|| previous.and_then(|p| p.kept(b)))
                .flatten();
            (b, outcome, kept)
        })
        .collect();
    let targets: Vec<String> = sections
        .iter()
        .flat_map(|(b, o, kept)| {
            let (text, suffix) = match (o, kept) {
                (Some(o), _) => (o.markdown.as_str(), ""),
                (None, Some(k)) => (k.as_str(), " (earlier run)"),
                (None, None) => ("", ""),
            };
            text.lines()
                .filter(|l| l.starts_with("- target"))
                .map(move |l| format!("- {}: {}{suffix}", b.name, &l[2..]))
        })
        .collect();
    if !targets.is_empty() {
        writeln!(md, "Targets, as checked by the benches below:\n")?;
        for t in targets {
            writeln!(md, "{t}")?;
        }
        writeln!(md)?;
    }
    writeln!(
        md,
        "Load average (1/5/15 min) before and after each bench is shown with it: this is a \
         small shared machine, and anything else running on it moves wall-clock figures.\n"
    )?;

    if sections.iter().any(|(_, _, kept)| kept.is_some()) {
        writeln!(
            md,
            "Sections that start with \"{KEPT}\" were not re-measured by this run: they \
             are copied from the report this one replaced, with the date and commit they \
             were measured at.\n"
        )?;
    }

    for (bench, o, kept) in &sections {
        let Some(o) = o else {
            match kept {
                Some(body) => writeln!(md, "## {}\n\n{body}\n", bench.title)?,
                None => writeln!(md, "## {}\n\nNot run this time.\n", bench.title)?,
            }
            continue;
        };
        writeln!(md, "## {}\n", bench.title)?;
        writeln!(md, "{}\n", bench.about)?;
        writeln!(
            md,
            "Command (from the repository root, as root; the binary is built by \
             `cargo bench -p ipwarden --no-run --bench {}`):\n",
            bench.name
        )?;
        writeln!(md, "    {}\n", o.command)?;
        writeln!(
            md,
            "Took {:.0} s; load average {} before, {} after.\n",
            o.seconds, o.load_before, o.load_after
        )?;
        if let Some(e) = &o.failed {
            writeln!(md, "**Failed: {e}.** Output so far:\n")?;
        }
        writeln!(md, "{}", o.markdown.trim_end())?;
        writeln!(md)?;
    }
    Ok(md)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A shell one-liner's trimmed stdout, empty on any failure (report details only).
fn sh(script: &str) -> String {
    Command::new("sh")
        .args(["-c", script])
        .current_dir(workspace_root())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `path` relative to the repository root when it is inside it.
fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}
