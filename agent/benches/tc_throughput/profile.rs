//! `IPWARDEN_BENCH_PROFILE=<dir>`: where a TCP request/response
//! transaction's CPU goes on the two nodes. Only the request/response
//! traffic, to the kube-router node and to the ipwarden node, `runs`
//! times each, interleaved; each window recorded by `perf record -a -g
//! -e cpu-clock` (a software clock: this VM has no PMU) into
//! `<dir>/<node>-<run>.data`, for `perf report` to split by function.
//! The transactions per CPU-second of each window are printed as in the
//! full bench, so a profile can be read beside its figure.

use std::{
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Child, Command, Stdio},
};

use ipwarden::netns::NetNs;

use super::{
    config::{Config, Receiver},
    cpu::cpus,
    stats::{median, spread},
    tcp_rr,
};

const NODES: [Config; 2] = [Config::KubeRouterNode, Config::IpwardenNode];

pub fn run(sender: &NetNs, receivers: &[Receiver], runs: usize, secs: f64, dir: &Path) {
    std::fs::create_dir_all(dir).expect("the profile directory");
    let mut figures: Vec<Vec<f64>> = vec![Vec::new(); NODES.len()];
    for run in 0..runs {
        for j in 0..NODES.len() {
            let i = (j + run) % NODES.len();
            let rx = receivers
                .iter()
                .find(|r| r.config == NODES[i])
                .expect("the node's receiver");
            let out = dir.join(format!("{}-{run}.data", rx.config.short()));
            let perf = record(&out);
            let rr = tcp_rr::tcp_rr(sender, &rx.ns, rx.v4, secs, cpus() >= 2);
            stop(perf);
            eprintln!(
                "profile run {run} {:>16}: rr {:.0}/s ({:.0} per CPU-s), {}",
                rx.config.short(),
                rr.per_sec,
                rr.per_cpu_sec,
                out.display()
            );
            figures[i].push(rr.per_cpu_sec);
        }
    }
    for (node, f) in NODES.iter().zip(&figures) {
        println!(
            "- {}: TCP request/response per CPU-second, median {:.0}, {}",
            node.short(),
            median(f.clone()),
            spread(f.clone())
        );
    }
    let ratios: Vec<f64> = figures[1]
        .iter()
        .zip(&figures[0])
        .map(|(ours, theirs)| ours / theirs)
        .collect();
    println!(
        "- ipwarden node vs kube-router node, run by run: median {:.3}x, {}",
        median(ratios.clone()),
        spread(ratios)
    );
}

/// `perf record` of every CPU into `out`, until [`stop`].
pub fn record(out: &Path) -> Child {
    Command::new("perf")
        .args(["record", "-a", "-g", "-e", "cpu-clock", "-q", "-o"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("run perf (apt-get install linux-perf)")
}

/// SIGINT, on which perf writes its file and exits (by the same signal,
/// or with 0).
pub fn stop(mut perf: Child) {
    // SAFETY: kill(2) on our own child's pid, which we have not reaped.
    unsafe { libc::kill(perf.id() as libc::pid_t, libc::SIGINT) };
    let status = perf.wait().expect("wait for perf");
    assert!(
        status.success() || status.signal() == Some(libc::SIGINT),
        "perf record failed: {status}"
    );
}
