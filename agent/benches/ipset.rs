//! Creating and filling a hash:ip,port set with N members, then listing it:
//! our netlink client against `ipset restore` / `ipset save` fed the same
//! content, each run in a fresh network namespace. Needs root:
//!
//! ```text
//! cargo bench -p ipwarden --bench ipset
//! ```
//!
//! `IPWARDEN_BENCH_SIZES` (default `1000,10000,100000`) and
//! `IPWARDEN_BENCH_RUNS` (default 5) tune it. Prints a markdown table of
//! medians and the ratios (ipset time / ours: above 1 means we are faster).

mod common;

use common::{env_list, median, ratio, runs};
use std::{
    io::Write,
    net::Ipv4Addr,
    process::Stdio,
    time::{Duration, Instant},
};

use ipwarden::{
    desired::{Family, SetType},
    kernel::ipset::{CreateSet, Element, Entry, IpsetClient, ProtoPort, Request, SetName},
    netns::{privileged, NetNs},
};

fn spec(n: usize) -> CreateSet {
    let name = SetName::new("bench").expect("valid name");
    CreateSet::new(name, SetType::HashIpPort, Family::V4).maxelem((n as u32).max(65_536))
}

fn members(n: usize) -> Vec<Element> {
    (0..n as u32)
        .map(|i| {
            Element::new(Entry::IpPort(
                Ipv4Addr::from(0x0a00_0000 + i).into(),
                ProtoPort::tcp(1 + (i % 60_000) as u16),
            ))
        })
        .collect()
}

struct Times {
    fill: Duration,
    list: Duration,
}

/// Ours: open the socket, create, add all members, list them back.
fn ours(spec: &CreateSet, ms: &[Element]) -> Times {
    let ns = NetNs::new("ipw-bench").expect("netns");
    ns.run(|| {
        let t0 = Instant::now();
        let mut c = IpsetClient::new().expect("socket");
        c.create(spec, false).expect("create");
        c.add(&spec.name, ms, false).expect("add");
        let t1 = Instant::now();
        let set = c.list(&spec.name).expect("list");
        let t2 = Instant::now();
        assert_eq!(set.members.len(), ms.len(), "listed members");
        Times {
            fill: t1 - t0,
            list: t2 - t1,
        }
    })
    .expect("run in netns")
}

/// The CLI: `ipset restore` of the same content, then `ipset save`.
fn cli(script: &str, n: usize) -> Times {
    let ns = NetNs::new("ipw-bench").expect("netns");
    let t0 = Instant::now();
    let mut child = ns
        .command("ipset")
        .arg("restore")
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
    let t1 = Instant::now();
    let save = ns.output("ipset", &["save", "bench"]).expect("ipset save");
    let t2 = Instant::now();
    assert_eq!(save.lines().count(), n + 1, "saved lines");
    Times {
        fill: t1 - t0,
        list: t2 - t1,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn main() {
    // `cargo test --benches` runs this binary too: only measure on request.
    if std::env::args().any(|a| a == "--test") || !privileged("ipset bench") {
        return;
    }
    let sizes = env_list("IPWARDEN_BENCH_SIZES", "1000,10000,100000");
    let runs = runs(5);
    println!("hash:ip,port, median of {runs} runs, each in a fresh netns (ms)\n");
    println!(
        "| members | ours fill | ipset restore | ratio | ours list | ipset save | ratio | ours total | ipset total | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let spec = spec(n);
        let ms_ = members(n);
        let script = format!(
            "{}{}",
            Request::create(spec.clone()).restore_lines(),
            Request::add(spec.name.clone(), ms_.clone()).restore_lines()
        );
        let (mut of, mut ol, mut ot, mut cf, mut cl, mut ct) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..runs {
            let o = ours(&spec, &ms_);
            let c = cli(&script, n);
            of.push(o.fill);
            ol.push(o.list);
            ot.push(o.fill + o.list);
            cf.push(c.fill);
            cl.push(c.list);
            ct.push(c.fill + c.list);
        }
        let (of, ol, ot) = (median(of), median(ol), median(ot));
        let (cf, cl, ct) = (median(cf), median(cl), median(ct));
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            ms(of),
            ms(cf),
            ratio(cf, of),
            ms(ol),
            ms(cl),
            ratio(cl, ol),
            ms(ot),
            ms(ct),
            ratio(ct, ot)
        );
    }
}
