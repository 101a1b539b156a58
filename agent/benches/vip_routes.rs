//! The VIP step of a full sync: `LinkClient::sync_vips` of N local routes
//! onto the dummy, the same again (nothing to do: one route dump), one
//! VIP added and one deleted beside them (`change_vips_at`, a partial
//! sync's step), and all N deleted; beside it `ip -batch` adding the same
//! N routes. Each run in a fresh network namespace. Needs root:
//!
//! ```text
//! cargo bench -p ipwarden --bench vip_routes
//! ```
//!
//! `IPWARDEN_BENCH_SIZES` (default `1000,10000`) and `IPWARDEN_BENCH_RUNS`
//! (default 3) tune it. Prints a markdown table of medians in ms.

mod common;

use common::{env_list, median, runs};
use std::{
    collections::BTreeSet,
    io::Write,
    net::{IpAddr, Ipv4Addr},
    process::Stdio,
    time::{Duration, Instant},
};

use ipwarden::{
    kernel::link::LinkClient,
    netns::{privileged, NetNs},
};

const DUMMY: &str = "ipwarden0";

fn vips(range: std::ops::Range<u32>) -> BTreeSet<IpAddr> {
    range
        .map(|i| IpAddr::from(Ipv4Addr::from(0x0a60_0000 + i)))
        .collect()
}

/// The columns of one run, in order.
const STEPS: [&str; 5] = ["sync_vips", "again", "add one", "delete one", "delete all"];

fn ours(n: u32) -> [Duration; 5] {
    let ns = NetNs::new("ipw-bench-vips").expect("netns");
    ns.run(|| {
        let link = LinkClient::connect().expect("socket");
        let (index, _) = link.ensure_dummy(DUMMY).expect("dummy");
        let want = vips(0..n);
        let none = BTreeSet::new();
        let timed = |f: &dyn Fn() -> usize, expect: usize| {
            let t = Instant::now();
            assert_eq!(f(), expect, "VIPs written");
            t.elapsed()
        };
        let written = |r: ipwarden::kernel::link::AddressReport| r.added.len() + r.removed.len();
        [
            timed(
                &|| written(link.sync_vips_at(index, &want).unwrap()),
                n as usize,
            ),
            timed(&|| written(link.sync_vips_at(index, &want).unwrap()), 0),
            timed(
                &|| written(link.change_vips_at(index, &vips(n..n + 1), &none).unwrap()),
                1,
            ),
            timed(
                &|| written(link.change_vips_at(index, &none, &vips(n..n + 1)).unwrap()),
                1,
            ),
            timed(
                &|| written(link.sync_vips_at(index, &none).unwrap()),
                n as usize,
            ),
        ]
    })
    .expect("run in netns")
}

/// `ip -batch` adding the same routes, one request and ack at a time.
fn ip_batch(n: u32) -> Duration {
    let ns = NetNs::new("ipw-bench-vips").expect("netns");
    ns.ip(&["link", "add", DUMMY, "type", "bridge"])
        .expect("dummy");
    let script: String = vips(0..n)
        .iter()
        .map(|a| format!("route add local {a} dev {DUMMY} table local proto 211\n"))
        .collect();
    let t = Instant::now();
    let mut child = ns
        .command("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn ip -batch");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(script.as_bytes()).expect("write script");
    drop(stdin);
    assert!(child.wait().expect("wait").success(), "ip -batch failed");
    t.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn main() {
    // `cargo test --benches` runs this binary too: only measure on request.
    if std::env::args().any(|a| a == "--test") || !privileged("vip_routes bench") {
        return;
    }
    let sizes = env_list("IPWARDEN_BENCH_SIZES", "1000,10000");
    let runs = runs(3);
    println!("VIP routes on {DUMMY}, median of {runs} runs, each in a fresh netns (ms)\n");
    println!("| VIPs | {} | ip -batch add |", STEPS.join(" | "));
    println!("|---:|{}---:|", "---:|".repeat(STEPS.len()));
    for n in sizes {
        let n = n as u32;
        let mut cols: Vec<Vec<Duration>> = vec![Vec::new(); STEPS.len() + 1];
        for _ in 0..runs {
            for (col, d) in cols.iter_mut().zip(ours(n)) {
                col.push(d);
            }
            cols[STEPS.len()].push(ip_batch(n));
        }
        let row: Vec<String> = cols.into_iter().map(|c| ms(median(c))).collect();
        println!("| {n} | {} |", row.join(" | "));
    }
}
