//! Property: for random set types, families, options and members, a set we
//! write is what `ipset save` prints, and the same set written by
//! `ipset restore` is what we read back. Each case runs in a fresh network
//! namespace.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    net::IpAddr,
    process::Stdio,
};

use ipwarden::{
    desired::{Family, SetType},
    kernel::ipset::{
        Comment, Counters, CreateSet, Element, Entry, IpSet, IpsetClient, Net, ProtoPort, Request,
        SetName,
    },
    netns::{privileged, NetNs},
};
use proptest::prelude::*;

fn arb_ip(family: Family) -> BoxedStrategy<IpAddr> {
    // The kernel refuses an all-zero address as a "null-valued element".
    match family {
        Family::V4 => any::<[u8; 4]>()
            .prop_filter("non-zero", |a| *a != [0; 4])
            .prop_map(IpAddr::from)
            .boxed(),
        Family::V6 => any::<[u8; 16]>()
            .prop_filter("non-zero", |a| *a != [0; 16])
            .prop_map(IpAddr::from)
            .boxed(),
    }
}

fn arb_proto_port(family: Family) -> BoxedStrategy<ProtoPort> {
    let icmp = match family {
        Family::V4 => (any::<u8>(), any::<u8>())
            .prop_map(|(t, c)| ProtoPort::icmp(t, c))
            .boxed(),
        Family::V6 => (any::<u8>(), any::<u8>())
            .prop_map(|(t, c)| ProtoPort::icmpv6(t, c))
            .boxed(),
    };
    prop_oneof![
        3 => any::<u16>().prop_map(ProtoPort::tcp),
        2 => any::<u16>().prop_map(ProtoPort::udp),
        2 => any::<u16>().prop_map(ProtoPort::sctp),
        1 => any::<u16>().prop_map(|p| ProtoPort::new(136, p).unwrap()),
        1 => icmp,
        1 => (1u8..=255)
            .prop_filter("portless", |p| ![1, 6, 17, 58, 132, 136].contains(p))
            .prop_map(|p| ProtoPort::new(p, 0).unwrap()),
    ]
    .boxed()
}

fn arb_entry(set_type: SetType, family: Family) -> BoxedStrategy<Entry> {
    let net = (arb_ip(family), 1..=family.host_prefix())
        .prop_map(|(a, p)| Net::new(a, p).unwrap())
        .boxed();
    match set_type {
        SetType::HashIp => arb_ip(family).prop_map(Entry::Ip).boxed(),
        SetType::HashNet => net.prop_map(Entry::Net).boxed(),
        SetType::HashIpPort => (arb_ip(family), arb_proto_port(family))
            .prop_map(|(a, p)| Entry::IpPort(a, p))
            .boxed(),
        SetType::HashNetPort => (net, arb_proto_port(family))
            .prop_map(|(n, p)| Entry::NetPort(n, p))
            .boxed(),
        SetType::HashIpPortIp => (arb_ip(family), arb_proto_port(family), arb_ip(family))
            .prop_map(|(a, p, b)| Entry::IpPortIp(a, p, b))
            .boxed(),
    }
}

/// A member whose extensions the set `spec` accepts.
fn arb_member(spec: &CreateSet) -> BoxedStrategy<Element> {
    let spec = spec.clone();
    (
        arb_entry(spec.set_type, spec.family),
        any::<bool>(),
        // No timeout that could run out between the add and `ipset save`.
        prop_oneof![Just(None), Just(Some(0)), (300u32..100_000).prop_map(Some)],
        proptest::option::of((any::<u64>(), any::<u64>())),
        // No leading '-': the ipset CLI (the oracle) reads `comment "-o"`
        // as its option -o, whatever the quotes.
        proptest::option::of("[a-zA-Z0-9._:/][a-zA-Z0-9 ._:/-]{0,30}[a-zA-Z0-9]"),
    )
        .prop_map(
            move |(entry, nomatch, timeout, counters, comment)| Element {
                entry,
                nomatch: nomatch && spec.set_type.has_nomatch(),
                timeout: timeout.filter(|_| spec.timeout.is_some()),
                counters: counters
                    .filter(|_| spec.counters)
                    .map(|(packets, bytes)| Counters { packets, bytes }),
                comment: comment
                    .filter(|_| spec.comment)
                    .map(|c| Comment::new(c).unwrap()),
            },
        )
        .boxed()
}

fn arb_set() -> impl Strategy<Value = (CreateSet, Vec<Element>)> {
    (
        proptest::sample::select(SetType::ALL.to_vec()),
        prop_oneof![Just(Family::V4), Just(Family::V6)],
        prop_oneof![Just(None), Just(Some(0)), Just(Some(600))],
        any::<(bool, bool)>(),
        proptest::option::of(prop_oneof![Just(64u32), Just(100), Just(1024), Just(4096)]),
        proptest::option::of(0u32..50),
    )
        .prop_map(|(t, f, timeout, (comment, counters), hashsize, extra)| {
            let mut spec = CreateSet::new(SetName::new("prop").unwrap(), t, f);
            spec.timeout = timeout;
            spec.comment = comment;
            spec.counters = counters;
            spec.hashsize = hashsize;
            // Room for every member: the maxelem is set after they are drawn.
            spec.maxelem = extra;
            spec
        })
        .prop_flat_map(|spec| {
            let members = proptest::collection::vec(arb_member(&spec), 0..25);
            (Just(spec), members)
        })
        .prop_map(|(mut spec, members)| {
            // One member per element: the kernel keys on the element only.
            let mut by_entry = BTreeMap::new();
            for m in members {
                by_entry.entry(m.entry).or_insert(m);
            }
            let members: Vec<Element> = by_entry.into_values().collect();
            spec.maxelem = spec.maxelem.map(|extra| members.len() as u32 + extra + 1);
            (spec, members)
        })
}

/// The `add` lines the kernel should list for what we wrote, with a
/// ticking (non-zero) timeout written as `T`.
fn expected(spec: &CreateSet, members: &[Element]) -> BTreeSet<String> {
    members
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.timeout = spec.timeout.map(|d| m.timeout.unwrap_or(d));
            if spec.counters {
                m.counters = Some(m.counters.unwrap_or_default());
            }
            normalise_line(&format!("add {} {m}", spec.name))
        })
        .collect()
}

fn normalise_line(line: &str) -> String {
    let mut words: Vec<&str> = line.split(' ').collect();
    for i in 0..words.len().saturating_sub(1) {
        if words[i] == "timeout" && words[i + 1] != "0" && line.starts_with("add ") {
            words[i + 1] = "T";
        }
    }
    words.join(" ")
}

/// (create line, add lines) of a save text.
fn split(text: &str) -> (String, BTreeSet<String>) {
    let create = text
        .lines()
        .find(|l| l.starts_with("create "))
        .unwrap_or("")
        .to_owned();
    let adds = text
        .lines()
        .filter(|l| l.starts_with("add "))
        .map(normalise_line)
        .collect();
    (create, adds)
}

fn restore(ns: &NetNs, script: &str) -> Result<(), String> {
    let mut child = ns
        .command("ipset")
        .arg("restore")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "ipset restore: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn privileged_random_sets_round_trip_through_ipset((spec, members) in arb_set()) {
        if !privileged("privileged_random_sets_round_trip_through_ipset") {
            return Ok(());
        }
        let ns = NetNs::new("ipw-ipset").unwrap();
        let want = expected(&spec, &members);

        // We write, ipset reads.
        let ours: IpSet = ns
            .run(|| {
                let mut c = IpsetClient::new().unwrap();
                c.create(&spec, false).unwrap();
                c.add(&spec.name, &members, false).unwrap();
                c.list(&spec.name).unwrap()
            })
            .unwrap();
        let save = ns.output("ipset", &["save", "prop"]).unwrap();
        let (save_create, save_adds) = split(&save);
        let (our_create, our_adds) = split(&ours.to_string());
        prop_assert_eq!(&our_create, &save_create);
        prop_assert_eq!(&our_adds, &save_adds);
        prop_assert_eq!(&save_adds, &want);
        prop_assert!(ours.header.satisfies(&spec), "{} vs {}", ours.header, spec);

        // ipset writes, we read.
        ns.output("ipset", &["destroy", "prop"]).unwrap();
        let script = format!(
            "{}{}",
            Request::create(spec.clone()).restore_lines(),
            Request::add(spec.name.clone(), members.clone()).restore_lines()
        );
        restore(&ns, &script).map_err(TestCaseError::fail)?;
        let theirs = ns
            .run(|| IpsetClient::new().unwrap().list(&spec.name).unwrap())
            .unwrap();
        let save = ns.output("ipset", &["save", "prop"]).unwrap();
        let (save_create, save_adds) = split(&save);
        let (their_create, their_adds) = split(&theirs.to_string());
        prop_assert_eq!(their_create, save_create);
        prop_assert_eq!(&their_adds, &save_adds);
        prop_assert_eq!(&their_adds, &want);
    }
}
