//! One size of the agent bench: a lab, the fake API server serving the
//! cluster, the agent started twice (the measured run, then the no-op
//! resync run), and the figures.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ipwarden::lab::{AgentProcess, Lab, CLUSTER};

use crate::{
    common::cluster::Rng,
    lab_apiserver::Kube,
    objects::{external_ip, Cluster},
    scrape::Scrape,
};

/// Every size's figures.
pub struct Figures {
    pub ready: Duration,
    pub full_services: Duration,
    pub full_policies: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub partial_mean: Duration,
    pub noop_services: Duration,
    pub noop_policies: Duration,
    /// CPU (worker thread and its children) of each controller's first
    /// full sync, services then policies.
    pub full_cpu: [Duration; 2],
    /// CPU of one no-op full resync (median), services then policies.
    pub noop_cpu: [Duration; 2],
    pub peak_rss_kib: u64,
    /// The same peak with the bench's `/state` reads left out: each
    /// agent's VmHWM read before them, and reset after them.
    pub peak_syncs_kib: u64,
    /// The agent's CPU time (self and children) from start to ready.
    pub cpu_at_ready: Duration,
    /// The steps of the service controller's first full sync.
    pub full_steps: Vec<(String, Duration)>,
    /// The median duration of each step of a partial sync.
    pub steps: Vec<(String, Duration)>,
    /// The steps of the service controller's last no-op full resync.
    pub noop_steps: Vec<(String, Duration)>,
    /// The steps of the policy controller's last no-op full resync.
    pub noop_policy_steps: Vec<(String, Duration)>,
    /// The slowest timed changes, where their time went.
    pub slowest: Vec<ChangeTiming>,
}

/// One change's latency split at the agent's own timestamps (its
/// metrics): the server's write to the dispatcher noting it (watch, decode,
/// store), the note to the sync's start (debounce, a sync under way), and
/// the sync, with the sync's own steps.
#[derive(Clone, Debug, Default)]
pub struct ChangeTiming {
    /// Which change (0: the first after ready).
    pub index: usize,
    pub total: Duration,
    pub to_noted: Duration,
    pub noted_to_sync: Duration,
    pub sync: Duration,
    /// The CPU of the sync's thread (and its children) in that time: far
    /// below `sync`, the thread waited (for a vCPU, a lock, the kernel).
    pub sync_cpu: Duration,
    /// The sync's steps, largest first
    /// (`ipwarden_sync_step_seconds_total`), "queued" left out.
    pub steps: Vec<(String, Duration)>,
}

/// How many of the slowest changes the bench breaks down.
const SLOWEST: usize = 3;

pub struct SizeRun {
    pub services: usize,
    pub pods: usize,
    pub policies: usize,
    pub namespaces: usize,
    pub changes: usize,
}

/// Waits for the first full sync; TCG and 50k Services are slow.
const READY_WITHIN: Duration = Duration::from_secs(1800);
/// One change must be applied within this, or the bench fails.
const APPLIED_WITHIN: Duration = Duration::from_secs(60);
/// Periodic no-op full syncs timed per controller.
const NOOP_SYNCS: usize = 3;
/// Changes whose partial sync is broken down into steps (after the
/// timed ones and the peak RSS reading: reading `/state` costs memory).
const BREAKDOWN_CHANGES: usize = 21;

/// `IPWARDEN_BENCH_AGENT_ARGS`: more flags for the agent, split at
/// whitespace (e.g. `--run-firewall=false` to time one controller alone).
fn extra_args() -> Vec<String> {
    std::env::var("IPWARDEN_BENCH_AGENT_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// `IPWARDEN_BENCH_FIRST_ONLY=1`: time the first full sync only (no
/// changes, no no-op resyncs).
pub fn first_only() -> bool {
    std::env::var("IPWARDEN_BENCH_FIRST_ONLY").is_ok_and(|v| v == "1")
}

/// `IPWARDEN_BENCH_NO_RESYNC=1`: no restarted agent timing no-op full
/// resyncs (at 50k Services they take longer than the rest together).
fn no_resync() -> bool {
    std::env::var("IPWARDEN_BENCH_NO_RESYNC").is_ok_and(|v| v == "1")
}

/// `IPWARDEN_BENCH_NOOP_ONLY=1`: the first full sync and the no-op
/// resyncs, no changes.
pub fn noop_only() -> bool {
    std::env::var("IPWARDEN_BENCH_NOOP_ONLY").is_ok_and(|v| v == "1")
}

/// `IPWARDEN_BENCH_SETTLE_MS`: a pause between ready and the first change
/// (none by default), to tell what follows readiness from a first run.
fn settle() -> Duration {
    let ms = std::env::var("IPWARDEN_BENCH_SETTLE_MS").ok();
    Duration::from_millis(ms.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// `IPWARDEN_BENCH_WARMUP`: changes made and confirmed before the timed
/// ones, not timed (none by default). Under qemu's TCG the first run of
/// a code path is translated first: the first change after ready pays for
/// the whole partial sync's path (section "The first change after ready
/// is the first run of its code" in BENCHMARKS.md).
fn warmup() -> usize {
    let n = std::env::var("IPWARDEN_BENCH_WARMUP").ok();
    n.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `IPWARDEN_BENCH_AGENT_BIN`: another `ipwarden` binary to time (a copy
/// of an earlier build, for a before/after); by default this build's.
fn agent_binary() -> PathBuf {
    std::env::var_os("IPWARDEN_BENCH_AGENT_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_ipwarden").into(), Into::into)
}

fn agent(lab: &Lab, kube: &Kube, flags: &[&str]) -> AgentProcess {
    let kubeconfig = kube.kubeconfig.to_string_lossy();
    let more = extra_args();
    let extra: Vec<&str> = flags
        .iter()
        .copied()
        .chain(more.iter().map(String::as_str))
        .collect();
    AgentProcess::spawn(
        lab,
        &agent_binary(),
        &["--kubeconfig", kubeconfig.as_ref()],
        &extra,
    )
    .expect("starting the agent")
}

/// CPU time of `pid` and of its waited-for children (utime + stime +
/// cutime + cstime of `/proc/PID/stat`).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("agent stat");
    // Fields after the command name, which may hold spaces: state is 3rd.
    let rest = stat.rsplit_once(") ").expect("stat").1;
    let ticks: u64 = rest
        .split(' ')
        .skip(11)
        .take(4)
        .map(|t| t.parse::<u64>().expect("ticks"))
        .sum();
    // USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

/// Resets `pid`'s VmHWM to its current RSS (`clear_refs` 5), so that
/// the next reading leaves out a peak already counted (a `/state` read).
fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting VmHWM");
}

/// VmHWM of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).expect("clock").as_secs_f64()
}

/// Polls `f` every 2 ms until it returns Some, for at most `within`.
fn poll<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn scrape() -> Scrape {
    Scrape::take().expect("scraping the agent's /metrics")
}

impl SizeRun {
    pub fn measure(&self) -> Figures {
        let lab = Lab::new(CLUSTER).expect("lab");
        let kube = Kube::serve(&lab);
        let cluster = Cluster::new(self.services, self.pods, self.policies, self.namespaces);
        cluster.serve(&kube);
        eprintln!("agent bench: cluster served; starting the agent");

        let quiet = [
            "--min-sync-period",
            "100ms",
            "--ipvs-sync-period",
            "1h",
            "--iptables-sync-period",
            "1h",
            "--audit-interval",
            "1h",
        ];
        let mut external = vec![false; self.services];
        let started = Instant::now();
        let mut first = agent(&lab, &kube, &quiet);
        first.wait_ready(READY_WITHIN).expect("first full sync");
        let ready = started.elapsed();
        let cpu_at_ready = cpu_time(first.pid());
        let mut syncs_peak = peak_rss_kib(first.pid());
        let full_steps = lab
            .node
            .run(|| crate::steps::last_steps("last_full"))
            .expect("node namespace");
        let mut peak = peak_rss_kib(first.pid());
        reset_peak_rss(first.pid());
        eprintln!("agent bench: ready in {ready:?}, CPU {cpu_at_ready:?}; services' full sync steps {full_steps:?}");
        if first_only() {
            let peaks = (peak, syncs_peak);
            return self.first_sync_only(&lab, first, ready, cpu_at_ready, full_steps, peaks);
        }
        let (full_services, full_policies, full_cpu, changes) = lab
            .node
            .run(|| {
                let s = scrape();
                // The mean, should a relist have brought a second one.
                let mean =
                    |total: f64, c| Duration::from_secs_f64(total / s.syncs(c, "full").max(1.0));
                let full = |c| mean(s.sync_seconds(c, "full"), c);
                let cpu = |c| mean(s.sync_cpu(c, "full"), c);
                let changes = if noop_only() {
                    (vec![ChangeTiming::default()], Duration::ZERO)
                } else {
                    self.changes_latency(&kube, &cluster, &mut external)
                };
                (
                    full("services"),
                    full("policies"),
                    [cpu("services"), cpu("policies")],
                    changes,
                )
            })
            .expect("node namespace");
        syncs_peak = syncs_peak.max(peak_rss_kib(first.pid()));
        peak = peak.max(peak_rss_kib(first.pid()));
        let steps = if noop_only() {
            Vec::new()
        } else {
            lab.node
                .run(|| self.step_breakdown(&kube, &cluster, &mut external))
                .expect("node namespace")
        };
        peak = peak.max(peak_rss_kib(first.pid()));
        first.terminate().expect("SIGTERM");
        eprintln!("agent bench: ready in {ready:?}; timing no-op full resyncs");

        // One controller at a time with a short period (twice its full
        // apply, at least 3 s), the other's an hour: the two would share
        // the xtables lock and the CPUs, and each would time the other.
        let mut noop = [Duration::ZERO; 2];
        let mut noop_cpu = [Duration::ZERO; 2];
        let mut noop_steps = Vec::new();
        let mut noop_policy_steps = Vec::new();
        let resynced = [("services", full_services), ("policies", full_policies)];
        let resynced = if no_resync() {
            &resynced[..0]
        } else {
            &resynced[..]
        };
        for (k, &(controller, full)) in resynced.iter().enumerate() {
            let short = format!("{}s", (full.as_secs_f64() * 2.0).ceil().max(3.0) as u64);
            let (ipvs, iptables) = match controller {
                "services" => (short.as_str(), "1h"),
                _ => ("1h", short.as_str()),
            };
            let periodic = [
                "--min-sync-period",
                "100ms",
                "--ipvs-sync-period",
                ipvs,
                "--iptables-sync-period",
                iptables,
                "--audit-interval",
                "1h",
            ];
            let mut again = agent(&lab, &kube, &periodic);
            again.wait_ready(READY_WITHIN).expect("restart full sync");
            (noop[k], noop_cpu[k]) = lab
                .node
                .run(|| noop_full_sync(controller, READY_WITHIN))
                .expect("node namespace");
            eprintln!(
                "agent bench: {controller} no-op full resync {:?}, CPU {:?}",
                noop[k], noop_cpu[k]
            );
            syncs_peak = syncs_peak.max(peak_rss_kib(again.pid()));
            let steps = lab
                .node
                .run(|| crate::steps::controller_steps(controller, "last_full"))
                .expect("node namespace");
            match controller {
                "services" => noop_steps = steps,
                _ => noop_policy_steps = steps,
            }
            peak = peak.max(peak_rss_kib(again.pid()));
            again.terminate().expect("SIGTERM");
        }
        let (mut timings, partial_mean) = changes;
        timings.sort_by_key(|t| t.total);
        let latencies: Vec<Duration> = timings.iter().map(|t| t.total).collect();
        let slowest = timings.iter().rev().take(SLOWEST).cloned().collect();
        let pct = |p: f64| latencies[((p * latencies.len() as f64).ceil() as usize).max(1) - 1];
        Figures {
            ready,
            full_services,
            full_policies,
            p50: pct(0.50),
            p99: pct(0.99),
            max: *latencies.last().expect("changes"),
            partial_mean,
            noop_services: noop[0],
            noop_policies: noop[1],
            full_cpu,
            noop_cpu,
            peak_rss_kib: peak,
            peak_syncs_kib: syncs_peak,
            cpu_at_ready,
            full_steps,
            steps,
            noop_steps,
            noop_policy_steps,
            slowest,
        }
    }

    /// The figures of the first full sync alone; the others are zero.
    fn first_sync_only(
        &self,
        lab: &Lab,
        first: AgentProcess,
        ready: Duration,
        cpu_at_ready: Duration,
        full_steps: Vec<(String, Duration)>,
        (peak_rss_kib, peak_syncs_kib): (u64, u64),
    ) -> Figures {
        let (full_services, full_policies) = lab
            .node
            .run(|| {
                let s = scrape();
                let full = |c| {
                    Duration::from_secs_f64(s.sync_seconds(c, "full") / s.syncs(c, "full").max(1.0))
                };
                (full("services"), full("policies"))
            })
            .expect("node namespace");
        first.terminate().expect("SIGTERM");
        Figures {
            ready,
            full_services,
            full_policies,
            p50: Duration::ZERO,
            p99: Duration::ZERO,
            max: Duration::ZERO,
            partial_mean: Duration::ZERO,
            noop_services: Duration::ZERO,
            noop_policies: Duration::ZERO,
            full_cpu: [Duration::ZERO; 2],
            noop_cpu: [Duration::ZERO; 2],
            peak_rss_kib,
            peak_syncs_kib,
            cpu_at_ready,
            full_steps,
            steps: Vec::new(),
            noop_steps: Vec::new(),
            noop_policy_steps: Vec::new(),
            slowest: Vec::new(),
        }
    }

    /// The median of each step of the partial syncs of a few more changes,
    /// read from `/state` after each. Runs inside the node namespace.
    fn step_breakdown(
        &self,
        kube: &Kube,
        cluster: &Cluster,
        external: &mut [bool],
    ) -> Vec<(String, Duration)> {
        let mut rng = Rng(11);
        let mut samples = Vec::with_capacity(BREAKDOWN_CHANGES);
        for _ in 0..BREAKDOWN_CHANGES {
            let i = rng.below(self.services);
            external[i] = !external[i];
            one_change(kube, cluster, i, external[i]);
            confirm_in_ipvs(i, external[i]);
            samples.push(crate::steps::last_partial());
            std::thread::sleep(Duration::from_millis(150));
        }
        crate::steps::medians(&samples)
    }

    /// The changes' timings in the order made, and the mean partial sync
    /// duration. Runs inside the node namespace.
    fn changes_latency(
        &self,
        kube: &Kube,
        cluster: &Cluster,
        external: &mut [bool],
    ) -> (Vec<ChangeTiming>, Duration) {
        let mut rng = Rng(7);
        std::thread::sleep(settle());
        let mut untimed = Rng(5);
        for _ in 0..warmup() {
            let i = untimed.below(self.services);
            external[i] = !external[i];
            one_change(kube, cluster, i, external[i]);
            confirm_in_ipvs(i, external[i]);
            std::thread::sleep(Duration::from_millis(150));
        }
        let before = scrape();
        let mut latencies = Vec::with_capacity(self.changes);
        for k in 0..self.changes {
            let i = rng.below(self.services);
            external[i] = !external[i];
            let timing = ChangeTiming {
                index: k,
                ..one_change(kube, cluster, i, external[i])
            };
            eprintln!("agent bench: change {k} (svc-{i}): {timing:?}");
            latencies.push(timing);
            confirm_in_ipvs(i, external[i]);
            if k % 40 == 39 {
                eprintln!("agent bench: {} changes applied", k + 1);
            }
            // Past the min-sync-period since the last sync: the next
            // change is not held back by the debounce.
            std::thread::sleep(Duration::from_millis(150));
        }
        let after = scrape();
        let partials = after.syncs("services", "partial") - before.syncs("services", "partial");
        let seconds =
            after.sync_seconds("services", "partial") - before.sync_seconds("services", "partial");
        (
            latencies,
            Duration::from_secs_f64(seconds / partials.max(1.0)),
        )
    }
}

/// Serves Service `i` with or without its externalIP; the time from the
/// watch event leaving the server to the service controller's sync after
/// it, and where it went.
fn one_change(kube: &Kube, cluster: &Cluster, i: usize, external: bool) -> ChangeTiming {
    let before = scrape();
    let done = |s: &Scrape| s.syncs("services", "partial") + s.syncs("services", "full");
    let rv = kube.apply(
        crate::fake_apiserver::Res::Services,
        cluster.service(i, external),
    );
    let sent = poll("the watch event", APPLIED_WITHIN, || kube.sent_at(rv));
    let after = poll("the sync of the change", APPLIED_WITHIN, || {
        let s = scrape();
        assert_eq!(
            s.failed_syncs("services"),
            before.failed_syncs("services"),
            "a sync of the service controller failed"
        );
        (done(&s) > done(&before) && s.last_synced("services") >= unix(sent)).then_some(s)
    });
    let seconds =
        |s: &Scrape| s.sync_seconds("services", "partial") + s.sync_seconds("services", "full");
    let span = |from: f64, to: f64| Duration::from_secs_f64((to - from).max(0.0));
    let (sent, noted, synced) = (
        unix(sent),
        after.last_queued("services"),
        after.last_synced("services"),
    );
    let sync = span(seconds(&before), seconds(&after));
    let cpu = |s: &Scrape| s.sync_cpu("services", "partial") + s.sync_cpu("services", "full");
    ChangeTiming {
        index: 0,
        total: span(sent, synced),
        to_noted: span(sent, noted),
        noted_to_sync: span(noted, synced).saturating_sub(sync),
        sync,
        sync_cpu: span(cpu(&before), cpu(&after)),
        steps: step_deltas(&before, &after),
    }
}

/// The time each step of the service controller's syncs took between two
/// scrapes (one sync: the change's), partial and full together, largest
/// first.
fn step_deltas(before: &Scrape, after: &Scrape) -> Vec<(String, Duration)> {
    let mut out: Vec<(String, Duration)> = Vec::new();
    for kind in ["partial", "full"] {
        let was = before.steps("services", kind);
        for (step, now) in after.steps("services", kind) {
            let spent = now - was.get(&step).copied().unwrap_or(0.0);
            if step == "queued" || spent <= 0.0 {
                continue;
            }
            let spent = Duration::from_secs_f64(spent);
            match out.iter_mut().find(|(s, _)| *s == step) {
                Some((_, d)) => *d += spent,
                None => out.push((step, spent)),
            }
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.1));
    out
}

/// `ipvsadm -Ln -t EXTERNAL:80` answers exactly when the externalIP is in
/// the Service. Runs inside the node namespace (ipvsadm inherits it).
fn confirm_in_ipvs(i: usize, external: bool) {
    let vip = format!("{}:80", external_ip(i));
    let found = Command::new("ipvsadm")
        .args(["-Ln", "-t", &vip])
        .output()
        .is_ok_and(|o| o.status.success());
    assert_eq!(
        found,
        external,
        "IPVS does not agree with svc-{i} (externalIP {vip} {})",
        if external { "added" } else { "removed" }
    );
}

/// The median duration and the median CPU of `NOOP_SYNCS` periodic full
/// syncs of `controller`, after the first (the restart's). Runs inside
/// the node namespace.
fn noop_full_sync(controller: &str, within: Duration) -> (Duration, Duration) {
    let mut durations = Vec::new();
    let mut cpus = Vec::new();
    let mut last = scrape();
    while durations.len() < NOOP_SYNCS {
        let next = poll("a periodic full sync", within, || {
            let s = scrape();
            (s.syncs(controller, "full") > last.syncs(controller, "full")).then_some(s)
        });
        let count = next.syncs(controller, "full") - last.syncs(controller, "full");
        let seconds = next.sync_seconds(controller, "full") - last.sync_seconds(controller, "full");
        let cpu = next.sync_cpu(controller, "full") - last.sync_cpu(controller, "full");
        durations.push(Duration::from_secs_f64(seconds / count));
        cpus.push(Duration::from_secs_f64(cpu / count));
        last = next;
    }
    durations.sort();
    cpus.sort();
    (durations[durations.len() / 2], cpus[cpus.len() / 2])
}
