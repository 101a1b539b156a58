//! The set store against kube-router's way of syncing a set: one
//! hash:ip,port set (`ipwarden-svip-prt`) of N members, in a fresh network
//! namespace per size. Needs root:
//!
//! ```text
//! cargo bench -p ipwarden --bench store
//! ```
//!
//! Measured, interleaved in every round so drift hits all sides alike:
//!
//! - **store, no-op**: `SetStore::apply` with the contents the kernel holds
//!   (save, diff, nothing written, read back);
//! - **store, 1 change**: `apply` with one member added or removed (the
//!   round toggles the same member);
//! - **kube-router, CLI**: what kube-router's `ipset.Save` + `ipset.Restore`
//!   do for the same state: `ipset save`, then `ipset restore -exist` of a
//!   script that creates a temporary set, adds every member, swaps it with
//!   the real one and destroys it. It has no diff, so a no-op costs what a
//!   change costs; both are measured;
//! - **kube-router, our client**: the same save + full rebuild + swap through
//!   our netlink client, so the ratio against the store isolates the design
//!   (diff against full restore) from the cost of the CLI;
//! - **one save**: `IpsetClient::list` of the set, the floor under any
//!   save-then-apply (the store saves before its diff and reads back after).
//!
//! `IPWARDEN_BENCH_SIZES` (default `1000,10000,100000`) and
//! `IPWARDEN_BENCH_RUNS` (default 11; sizes above 50k use a third of it,
//! at least 3) tune it. Prints one markdown table of medians with ratios
//! (baseline / store: above 1 means the store is faster).

mod common;

use common::{env_list, median, ratio};
use std::{
    collections::BTreeSet,
    io::Write,
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use ipwarden::{
    desired::{Family, Member, Protocol, SetSpec, SetType},
    kernel::ipset::{CreateSet, Element, IpsetClient, SetName},
    netns::{privileged, NetNs},
    store::{Claim, Owner, SetStore},
};

const SET: &str = "ipwarden-svip-prt";
const TMP: &str = "TMP-ipwarden-svip-prt";
const OWNER: &str = "services";
/// The member each round adds or removes (not among the N):
/// `10.255.255.254,tcp:8080`.
fn toggled() -> Member {
    Member::ip_port([10, 255, 255, 254].into(), Protocol::Tcp, 8080)
}

/// N members: distinct addresses in 10.0.0.0/9, a spread of TCP/UDP ports.
fn members(n: usize) -> BTreeSet<Member> {
    (0..n as u32)
        .map(|i| {
            let proto = if i % 4 == 3 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            };
            let port = 80 + (i % 1000) as u16;
            Member::ip_port(Ipv4Addr::from(0x0a00_0000 + i).into(), proto, port)
        })
        .collect()
}

/// The kernel set's options, used by every path (the store's diff looks at
/// type and family only, so it adopts the pre-created set).
fn maxelem(n: usize) -> u32 {
    (2 * n as u32).max(65_536)
}

fn with_toggled(base: &BTreeSet<Member>, present: bool) -> BTreeSet<Member> {
    let mut m = base.clone();
    if present {
        m.insert(toggled());
    }
    m
}

fn spec(members: BTreeSet<Member>) -> SetSpec {
    SetSpec {
        name: SET.to_string(),
        set_type: SetType::HashIpPort,
        family: Family::V4,
        members,
    }
}

fn entries(client: &mut IpsetClient) -> u32 {
    client
        .list_header(&SetName::new(SET).expect("name"))
        .expect("list -t")
        .stats
        .expect("stats")
        .entries
}

/// kube-router's `ipset.Restore` script for one set (pkg/utils/ipset.go,
/// buildIPSetRestore): fill a temporary set, swap, flush and destroy it.
fn kube_router_script(members: &BTreeSet<Member>, n: usize) -> String {
    let opts = format!(
        "hash:ip,port family inet hashsize 1024 maxelem {}",
        maxelem(n)
    );
    let mut s = String::with_capacity(members.len() * 40 + 256);
    s.push_str(&format!("create {TMP} {opts}\nflush {TMP}\n"));
    for m in members {
        s.push_str("add ");
        s.push_str(TMP);
        s.push(' ');
        s.push_str(&m.to_string());
        s.push('\n');
    }
    s.push_str(&format!(
        "create {SET} {opts}\nswap {TMP} {SET}\nflush {TMP}\ndestroy {TMP}\n"
    ));
    s
}

/// `ipset save` (every set, parsed into lines as kube-router does), then
/// `ipset restore -exist` of the full script. Runs on a thread inside the
/// namespace, so no `ip netns exec` is counted.
fn kube_router_cli(members: &BTreeSet<Member>, n: usize) -> Duration {
    let start = Instant::now();
    let save = Command::new("ipset")
        .arg("save")
        .output()
        .expect("ipset save");
    assert!(save.status.success(), "ipset save failed");
    let saved = String::from_utf8_lossy(&save.stdout)
        .lines()
        .filter(|l| l.starts_with("add "))
        .count();
    assert!(saved >= n, "ipset save listed {saved} members");
    let script = kube_router_script(members, n);
    let mut child = Command::new("ipset")
        .args(["restore", "-exist"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn ipset restore");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write script");
    assert!(
        child.wait().expect("wait").success(),
        "ipset restore failed"
    );
    start.elapsed()
}

/// The same save + full rebuild + swap, through our netlink client.
fn kube_router_client(client: &mut IpsetClient, members: &BTreeSet<Member>, n: usize) -> Duration {
    let set = SetName::new(SET).expect("name");
    let tmp = SetName::new(TMP).expect("name");
    let start = Instant::now();
    let saved = client.list(&set).expect("list");
    assert!(saved.members.len() >= n, "listed members");
    let ms: Vec<Element> = members
        .iter()
        .map(|m| Element::try_from(m).expect("member"))
        .collect();
    let kspec = |name: SetName| {
        CreateSet::new(name, SetType::HashIpPort, Family::V4)
            .hashsize(1024)
            .maxelem(maxelem(n))
    };
    client
        .create(&kspec(tmp.clone()), true)
        .expect("create tmp");
    client.flush(&tmp).expect("flush tmp");
    client.add(&tmp, &ms, false).expect("add");
    client.create(&kspec(set.clone()), true).expect("create");
    client.swap(&tmp, &set).expect("swap");
    client.flush(&tmp).expect("flush tmp");
    client.destroy(&tmp, false).expect("destroy tmp");
    start.elapsed()
}

/// Medians of one size, in milliseconds.
struct Row {
    n: usize,
    runs: usize,
    initial: Duration,
    store_noop: Duration,
    store_change: Duration,
    cli_noop: Duration,
    cli_change: Duration,
    client_noop: Duration,
    client_change: Duration,
    list: Duration,
}

fn measure(n: usize, runs: usize) -> Row {
    let ns = NetNs::new("ipw-bench-store").expect("netns");
    let base = members(n);
    ns.run(|| {
        let mut client = IpsetClient::new().expect("socket");
        // Room for 100k: the store's SetSpec carries no maxelem, so the set
        // is created here with kube-router's options and adopted.
        client
            .create(
                &CreateSet::new(
                    SetName::new(SET).expect("name"),
                    SetType::HashIpPort,
                    Family::V4,
                )
                .hashsize(1024)
                .maxelem(maxelem(n)),
                false,
            )
            .expect("create");
        let store = SetStore::new(IpsetClient::new().expect("socket"));
        store
            .register(Owner::new(OWNER, vec![Claim::Name(SET.into())]))
            .expect("register");

        let start = Instant::now();
        let r = store.apply(OWNER, vec![spec(base.clone())]).expect("fill");
        let initial = start.elapsed();
        assert_eq!(r.executed.members_added, n);
        assert!(r.verified);

        let mut present = false;
        let mut t: [Vec<Duration>; 7] = Default::default();
        for _ in 0..runs {
            // Store, no-op.
            let sets = vec![spec(with_toggled(&base, present))];
            let start = Instant::now();
            let r = store.apply(OWNER, sets).expect("apply");
            t[0].push(start.elapsed());
            assert!(!r.changed() && r.verified, "no-op apply changed {r:?}");

            // Store, one member.
            present = !present;
            let sets = vec![spec(with_toggled(&base, present))];
            let start = Instant::now();
            let r = store.apply(OWNER, sets).expect("apply");
            t[1].push(start.elapsed());
            assert_eq!(
                r.executed.members_added + r.executed.members_deleted,
                1,
                "{r:?}"
            );
            assert!(r.verified);

            // kube-router through the CLI: unchanged state, then one member.
            let same = with_toggled(&base, present);
            t[2].push(kube_router_cli(&same, n));
            present = !present;
            let next = with_toggled(&base, present);
            t[3].push(kube_router_cli(&next, n));
            assert_eq!(entries(&mut client) as usize, n + present as usize);

            // kube-router's design through our client.
            let same = with_toggled(&base, present);
            t[4].push(kube_router_client(&mut client, &same, n));
            present = !present;
            let next = with_toggled(&base, present);
            t[5].push(kube_router_client(&mut client, &next, n));
            assert_eq!(entries(&mut client) as usize, n + present as usize);

            // The floor under any save-then-apply: one save of the set.
            let set = SetName::new(SET).expect("name");
            let start = Instant::now();
            let listed = client.list(&set).expect("list");
            t[6].push(start.elapsed());
            assert_eq!(listed.members.len(), n + present as usize);
        }
        let [a, b, c, d, e, f, g] = t.map(median);
        Row {
            n,
            runs,
            initial,
            store_noop: a,
            store_change: b,
            cli_noop: c,
            cli_change: d,
            client_noop: e,
            client_change: f,
            list: g,
        }
    })
    .expect("run in netns")
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.1}")
    }
}

fn main() {
    // `cargo test --benches` runs this binary too: only measure on request.
    if std::env::args().any(|a| a == "--test") || !privileged("store bench") {
        return;
    }
    let sizes = env_list("IPWARDEN_BENCH_SIZES", "1000,10000,100000");
    let runs = env_list("IPWARDEN_BENCH_RUNS", "11")
        .first()
        .copied()
        .unwrap_or(11)
        .max(1);
    let mut rows = Vec::new();
    for n in sizes {
        let r = if n > 50_000 { (runs / 3).max(3) } else { runs };
        let row = measure(n, r);
        eprintln!(
            "store n={n}: no-op {:?}, change {:?}; kube-router CLI {:?} / {:?}; client {:?} / {:?}",
            row.store_noop,
            row.store_change,
            row.cli_noop,
            row.cli_change,
            row.client_noop,
            row.client_change
        );
        rows.push(row);
    }
    println!(
        "one hash:ip,port set, medians in ms; ratio = baseline / store (above 1: the store is faster)\n"
    );
    println!(
        "| members | runs | store: no-op | store: 1 change | kube-router CLI: no-op | ratio | kube-router CLI: 1 change | ratio | kube-router via our client: no-op | ratio | kube-router via our client: 1 change | ratio | one save via our client | store: first fill |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.n,
            r.runs,
            ms(r.store_noop),
            ms(r.store_change),
            ms(r.cli_noop),
            ratio(r.cli_noop, r.store_noop),
            ms(r.cli_change),
            ratio(r.cli_change, r.store_change),
            ms(r.client_noop),
            ratio(r.client_noop, r.store_noop),
            ms(r.client_change),
            ratio(r.client_change, r.store_change),
            ms(r.list),
            ms(r.initial),
        );
    }
}
