//! Programming N IPVS services with 3 destinations each: our batched
//! netlink client against `ipvsadm -R` fed the same table, each run in a
//! fresh network namespace. Needs IPVS, so it runs inside the test VM:
//!
//! ```text
//! cargo bench -p ipwarden --bench ipvs --no-run
//! cargo xtask vm-test -- target/release/deps/ipvs-<hash>
//! ```
//!
//! `IPWARDEN_BENCH_SIZES` (default `1000,10000`) and `IPWARDEN_BENCH_RUNS`
//! (default 3) tune it. Also times reading the table back: our `list()`
//! against `ipvsadm -Ln`. Prints a markdown table of medians.
//!
//! `IPWARDEN_BENCH_READS=1` instead times the reads a periodic full sync
//! can choose from, wall and the thread's CPU (user + system): the text of
//! `/proc/net/ip_vs`, the netlink dump of every service, and one
//! destination dump per service for a tenth of them, and the old
//! getsockopt interface as the agent's full sync reads it (every IPv4
//! service in one call, then each service's destinations, one call each:
//! `kernel::ipvs::sockopt::read`), and the same calls hashed without
//! decoding (`sockopt::summary`, a no-op full sync's read).

use std::{
    io::Write,
    net::IpAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use ipwarden::{
    kernel::ipvs::{
        sockopt, Destination, IpvsClient, IpvsErrorKind, Request, Scheduler, Service, ServiceKey,
    },
    netns::NetNs,
};

const DESTS_PER_SERVICE: u32 = 3;

fn vip(i: u32) -> IpAddr {
    IpAddr::from([10, 96 + (i >> 16) as u8, (i >> 8) as u8, i as u8])
}

fn backend(i: u32, j: u32) -> IpAddr {
    IpAddr::from([10, 244, j as u8, (i % 250) as u8 + 1])
}

fn requests(n: u32) -> Vec<Request> {
    let mut reqs = Vec::with_capacity((n * (1 + DESTS_PER_SERVICE)) as usize);
    for i in 0..n {
        let key = ServiceKey::tcp(vip(i), 80);
        reqs.push(Request::AddService(Service::new(
            key,
            Scheduler::round_robin(),
        )));
        for j in 0..DESTS_PER_SERVICE {
            reqs.push(Request::AddDestination {
                service: key,
                destination: Destination::new(backend(i, j), 8080).weight(1),
            });
        }
    }
    reqs
}

/// The same table as `requests`, in `ipvsadm -R` syntax.
fn script(n: u32) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("-A -t {}:80 -s rr\n", vip(i)));
        for j in 0..DESTS_PER_SERVICE {
            s.push_str(&format!(
                "-a -t {}:80 -r {}:8080 -m -w 1\n",
                vip(i),
                backend(i, j)
            ));
        }
    }
    s
}

/// Counts what the namespace holds, then flushes it so that deleting the
/// namespace (asynchronous in the kernel) costs little during later runs.
fn check_and_flush(ns: &NetNs, n: u32) {
    ns.run(|| {
        let mut c = IpvsClient::connect().expect("connect");
        let services = c.services().expect("list");
        assert_eq!(services.len(), n as usize, "services programmed");
        let sample = c.destinations(&services[0].service.key).expect("dests");
        assert_eq!(sample.len(), DESTS_PER_SERVICE as usize);
        c.execute(&Request::Flush).expect("flush");
    })
    .expect("netns");
}

fn ours(reqs: &[Request], n: u32, batch: Option<usize>) -> Duration {
    let ns = NetNs::new("ipw-bench").expect("netns");
    let took = ns
        .run(|| {
            let start = Instant::now();
            let mut c = IpvsClient::connect().expect("connect");
            if let Some(b) = batch {
                c.set_batch_size(b);
            }
            for (req, r) in reqs.iter().zip(c.execute_all(reqs)) {
                if let Err(e) = r {
                    panic!("{req}: {e}");
                }
            }
            start.elapsed()
        })
        .expect("netns");
    check_and_flush(&ns, n);
    took
}

/// Programs the table with `ipvsadm -R`, then times reading it back both
/// ways: (restore, our `list()`, `ipvsadm -Ln`).
fn ipvsadm_restore(script: &str, n: u32) -> (Duration, Duration, Duration) {
    let ns = NetNs::new("ipw-bench").expect("netns");
    let start = Instant::now();
    let mut child = ns
        .command("ipvsadm")
        .arg("-R")
        .stdin(Stdio::piped())
        .spawn()
        .expect("ipvsadm");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write");
    assert!(child.wait().expect("wait").success(), "ipvsadm -R failed");
    let restore = start.elapsed();

    let list = ns
        .run(|| {
            let start = Instant::now();
            let table = IpvsClient::connect()
                .expect("connect")
                .list()
                .expect("list");
            assert_eq!(table.len(), n as usize);
            start.elapsed()
        })
        .expect("netns");
    let start = Instant::now();
    let shown = ns
        .output("ipvsadm", &["-Ln", "--exact"])
        .expect("ipvsadm -Ln");
    let ipvsadm_list = start.elapsed();
    assert_eq!(
        shown.lines().filter(|l| l.starts_with("TCP")).count(),
        n as usize
    );

    check_and_flush(&ns, n);
    (restore, list, ipvsadm_list)
}

/// The calling thread's CPU time so far (user + system).
fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    if std::env::var("IPWARDEN_BENCH_SYS").is_ok_and(|v| v == "1") {
        return tv(u.ru_stime);
    }
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Wall and CPU time of `f`, on the calling thread.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (start, cpu) = (Instant::now(), thread_cpu());
    let out = f();
    (out, start.elapsed(), thread_cpu() - cpu)
}

/// The reads of a table of `n` services: (wall, CPU) of the `/proc` text,
/// of the service dump, of the destination dumps of a tenth of them, and
/// of every service and destination through getsockopt.
fn read_costs(reqs: &[Request], n: u32) -> [(Duration, Duration); 5] {
    let ns = NetNs::new("ipw-bench").expect("netns");
    let out = ns
        .run(|| {
            let mut c = IpvsClient::connect().expect("connect");
            for r in c.execute_all(reqs) {
                r.expect("program");
            }
            // The kernel's text, which the agent no longer reads: a baseline.
            let (text, w0, c0) =
                timed(|| std::fs::read_to_string("/proc/thread-self/net/ip_vs").expect("/proc"));
            assert_eq!(
                text.lines().filter(|l| l.starts_with("TCP")).count(),
                n as usize
            );
            let (services, w1, c1) = timed(|| c.services().expect("dump"));
            assert_eq!(services.len(), n as usize);
            let tenth: Vec<ServiceKey> =
                services.iter().step_by(10).map(|s| s.service.key).collect();
            let (dests, w2, c2) = timed(|| {
                tenth
                    .iter()
                    .map(|k| c.destinations(k).expect("dests").len())
                    .sum::<usize>()
            });
            assert_eq!(dests, tenth.len() * DESTS_PER_SERVICE as usize);
            let (all, w3, c3) = timed(|| {
                let table = sockopt::read().expect("getsockopt read");
                let dests: usize = table.services.iter().map(|s| s.destinations.len()).sum();
                (table.services.len(), dests)
            });
            assert_eq!(all, (n as usize, (n * DESTS_PER_SERVICE) as usize));
            let (summary, w4, c4) = timed(|| sockopt::summary().expect("getsockopt summary"));
            assert!(summary.partial.is_empty());
            [(w0, c0), (w1, c1), (w2, c2), (w3, c3), (w4, c4)]
        })
        .expect("netns");
    check_and_flush(&ns, n);
    out
}

fn print_read_costs(sizes: &[u32], runs: u32) {
    println!(
        "| services (x{DESTS_PER_SERVICE} dests) | /proc/net/ip_vs: wall | CPU \
         | service dump: wall | CPU | destination dumps of a tenth: wall | CPU \
         | getsockopt, every service and destination: wall | CPU \
         | getsockopt summary (hashed, not decoded): wall | CPU |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    for &n in sizes {
        let reqs = requests(n);
        let mut all: Vec<[(Duration, Duration); 5]> = Vec::new();
        for run in 0..runs {
            all.push(read_costs(&reqs, n));
            eprintln!("n={n} run {run}: {:?}", all.last().unwrap());
        }
        let cols: Vec<String> = (0..5)
            .flat_map(|i| {
                let wall = median(all.iter().map(|r| r[i].0).collect());
                let cpu = median(all.iter().map(|r| r[i].1).collect());
                [ms(wall), ms(cpu)]
            })
            .collect();
        println!("| {n} | {} |", cols.join(" | "));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn env_list(name: &str, default: &[u32]) -> Vec<u32> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("ipvs bench: skipped, needs root (run inside the VM)");
        return;
    }
    let probe = NetNs::new("ipw-bench").expect("netns");
    if let Err(e) = probe.run(IpvsClient::connect).expect("netns") {
        if e.is(IpvsErrorKind::NoIpvs) {
            eprintln!("ipvs bench: skipped: {e}");
            return;
        }
    }
    drop(probe);

    let sizes = env_list("IPWARDEN_BENCH_SIZES", &[1000, 10000]);
    let runs = env_list("IPWARDEN_BENCH_RUNS", &[3])[0].max(1);
    if std::env::var("IPWARDEN_BENCH_READS").is_ok_and(|v| v == "1") {
        print_read_costs(&sizes, runs);
        return;
    }
    let mut rows = Vec::new();
    for n in sizes {
        let reqs = requests(n);
        let text = script(n);
        let mut t: [Vec<Duration>; 5] = Default::default();
        for run in 0..runs {
            // Alternate, so drift in the VM hits both sides alike.
            t[0].push(ours(&reqs, n, None));
            let (restore, list, ipvsadm_list) = ipvsadm_restore(&text, n);
            t[1].push(restore);
            t[2].push(ours(&reqs, n, Some(1)));
            t[3].push(list);
            t[4].push(ipvsadm_list);
            eprintln!(
                "n={n} run {run}: add: ours {:?}, ipvsadm -R {:?}, ours unbatched {:?}; \
                 list: ours {:?}, ipvsadm -Ln {:?}",
                t[0][run as usize],
                t[1][run as usize],
                t[2][run as usize],
                t[3][run as usize],
                t[4][run as usize],
            );
        }
        rows.push((n, t.map(median)));
    }

    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let ratio = |a: Duration, b: Duration| format!("{:.1}x", a.as_secs_f64() / b.as_secs_f64());
    println!(
        "| services (x{DESTS_PER_SERVICE} dests) | add: ours, batched | add: ipvsadm -R | speed-up \
         | add: ours, 1 request per sendmsg | list: ours | list: ipvsadm -Ln | speed-up |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, [ours, restore, unbatched, list, ipvsadm_list]) in rows {
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} |",
            ms(ours),
            ms(restore),
            ratio(restore, ours),
            ms(unbatched),
            ms(list),
            ms(ipvsadm_list),
            ratio(ipvsadm_list, list),
        );
    }
}
