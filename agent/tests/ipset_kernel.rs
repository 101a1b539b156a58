//! The ipset client against the real kernel, each test in its own network
//! namespace, with the `ipset` CLI (v7.17) as the oracle: what we write,
//! `ipset save` prints identically; what `ipset restore` writes, we read
//! back identically.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    process::Stdio,
};

use ipwarden::{
    desired::{Family, SetType},
    kernel::ipset::{
        CreateSet, Element, IpSet, IpsetClient, IpsetError, IpsetErrorKind, Op, Request, SetName,
    },
    lab::ipset_save::parse_save,
    netns::{privileged, NetNs},
};

fn name(s: &str) -> SetName {
    SetName::new(s).unwrap()
}

fn members(t: SetType, lines: &[&str]) -> Vec<Element> {
    lines
        .iter()
        .map(|l| Element::parse(t, l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// Runs `f` with a fresh client inside `ns`.
fn with_client<T: Send>(ns: &NetNs, f: impl FnOnce(&mut IpsetClient) -> T + Send) -> T {
    ns.run(|| f(&mut IpsetClient::new().unwrap())).unwrap()
}

fn restore(ns: &NetNs, script: &str) {
    let mut child = ns
        .command("ipset")
        .arg("restore")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ipset restore failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Save text keyed by set: the create line and the set of add lines.
/// Members' remaining timeouts tick, so a non-zero one is compared as
/// "some timeout" (and checked against `max_timeout`).
fn normalise(text: &str, max_timeout: u32) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
        let set = words[1].clone();
        if words[0] == "create" {
            out.entry(set).or_default().0 = line.to_owned();
            continue;
        }
        for i in 0..words.len().saturating_sub(1) {
            if words[i] == "timeout" && words[i + 1] != "0" {
                let left: u32 = words[i + 1].parse().unwrap();
                assert!(left <= max_timeout, "{line}: timeout above {max_timeout}");
                words[i + 1] = "T".into();
            }
        }
        out.entry(set).or_default().1.insert(words.join(" "));
    }
    out
}

fn text(sets: &[IpSet]) -> String {
    sets.iter().map(IpSet::to_string).collect()
}

/// Every type in both families, with the options and member forms the
/// agent uses (and some it does not).
fn fixture() -> Vec<(CreateSet, Vec<Element>)> {
    let s = |n: &str, t, f| CreateSet::new(name(n), t, f);
    vec![
        (
            s("ip4", SetType::HashIp, Family::V4).timeout(0),
            members(
                SetType::HashIp,
                &["10.0.0.1 timeout 0", "10.0.0.2 timeout 600"],
            ),
        ),
        (
            s("ip6", SetType::HashIp, Family::V6)
                .hashsize(64)
                .maxelem(1000)
                .comment(),
            members(
                SetType::HashIp,
                &[
                    "2001:db8::1 comment \"node a\"",
                    "::ffff:10.1.2.3",
                    "::1.2.3.4",
                    "fe80::1:0:0:1",
                ],
            ),
        ),
        (
            s("ipport4", SetType::HashIpPort, Family::V4).counters(),
            members(
                SetType::HashIpPort,
                &[
                    "10.0.0.1,tcp:80",
                    "10.0.0.1,udp:53 packets 5 bytes 300",
                    "10.0.0.1,sctp:9",
                    "10.0.0.1,udplite:7",
                    "10.0.0.1,icmp:echo-request",
                    "10.0.0.1,icmp:200/7",
                    "10.0.0.1,gre:0",
                    "10.0.0.1,253:0",
                ],
            ),
        ),
        (
            s("ipport6", SetType::HashIpPort, Family::V6).timeout(3600),
            members(
                SetType::HashIpPort,
                &[
                    "2001:db8::10,tcp:443",
                    "2001:db8::10,sctp:132 timeout 0",
                    "2001:db8::10,ipv6-icmp:echo-request timeout 100",
                ],
            ),
        ),
        (
            s("net4", SetType::HashNet, Family::V4).comment(),
            members(
                SetType::HashNet,
                &[
                    "10.1.0.0/16",
                    "10.1.2.0/24 nomatch comment \"except\"",
                    "0.0.0.0/1",
                    "128.0.0.0/1",
                    "192.168.1.1",
                ],
            ),
        ),
        (
            s("net6", SetType::HashNet, Family::V6).maxelem(16),
            members(
                SetType::HashNet,
                &["2000::/3", "fd00::/8 nomatch", "2001:db8::1"],
            ),
        ),
        (
            s("netport4", SetType::HashNetPort, Family::V4),
            members(
                SetType::HashNetPort,
                &[
                    "10.1.0.0/16,tcp:80",
                    "10.1.0.0/24,tcp:80 nomatch",
                    "10.2.0.1,udp:53",
                ],
            ),
        ),
        (
            s("netport6", SetType::HashNetPort, Family::V6).comment(),
            members(
                SetType::HashNetPort,
                &[
                    "2001:db8::/64,udp:53 comment \"dns\"",
                    "2001:db8::/48,tcp:1 nomatch",
                ],
            ),
        ),
        (
            s("ipportip4", SetType::HashIpPortIp, Family::V4),
            members(
                SetType::HashIpPortIp,
                &["10.0.0.1,tcp:80,10.0.0.2", "10.0.0.1,udp:53,10.9.9.9"],
            ),
        ),
        (
            s("ipportip6", SetType::HashIpPortIp, Family::V6).hashsize(128),
            members(
                SetType::HashIpPortIp,
                &["2001:db8::1,tcp:1,::1", "2001:db8::1,sctp:2,2001:db8::2"],
            ),
        ),
    ]
}

#[test]
fn privileged_sets_we_write_are_what_ipset_save_prints() {
    if !privileged("privileged_sets_we_write_are_what_ipset_save_prints") {
        return;
    }
    let ns = NetNs::new("ipw-ipset").unwrap();
    let fixture = fixture();
    let ours = with_client(&ns, |c| {
        for (spec, ms) in &fixture {
            c.create(spec, false).unwrap();
            c.add(&spec.name, ms, false).unwrap();
        }
        c.list_all().unwrap()
    });
    let save = ns.output("ipset", &["save"]).unwrap();
    assert_eq!(normalise(&text(&ours.sets), 3600), normalise(&save, 3600));
    assert!(ours.unsupported.is_empty());

    // What is listed is exactly what was asked for.
    let listed: BTreeMap<_, _> = parse_save(&save)
        .unwrap()
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    for (spec, ms) in &fixture {
        let set = &listed[&spec.name];
        assert!(set.header.satisfies(spec), "{}: {}", spec, set.header);
        let want: BTreeSet<String> = ms.iter().map(|m| m.entry.to_string()).collect();
        let got: BTreeSet<String> = set.members.iter().map(|m| m.entry.to_string()).collect();
        assert_eq!(got, want, "{}", spec.name);
        for m in ms {
            let l = set.members.iter().find(|l| l.entry == m.entry).unwrap();
            // A counters set counts every member, from zero unless given.
            let counters = m.counters.or(spec.counters.then(Default::default));
            assert_eq!(
                (l.nomatch, &l.comment, l.counters),
                (m.nomatch, &m.comment, counters)
            );
        }
    }
}

#[test]
fn privileged_sets_ipset_restore_writes_read_back_identically() {
    if !privileged("privileged_sets_ipset_restore_writes_read_back_identically") {
        return;
    }
    let ns = NetNs::new("ipw-ipset").unwrap();
    let mut script = String::new();
    for (spec, ms) in fixture() {
        script.push_str(&Request::create(spec.clone()).restore_lines());
        script.push_str(&Request::add(spec.name, ms).restore_lines());
    }
    // A type we do not speak is reported, not misread.
    script.push_str("create ports bitmap:port range 1-1024\nadd ports 80\n");
    restore(&ns, &script);

    let ours = with_client(&ns, |c| c.list_all().unwrap());
    let save = ns.output("ipset", &["save"]).unwrap();
    let save_known: String = save
        .lines()
        .filter(|l| !l.contains(" ports "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        normalise(&text(&ours.sets), 3600),
        normalise(&save_known, 3600)
    );
    assert_eq!(ours.unsupported.len(), 1);
    assert_eq!(ours.unsupported[0].name, "ports");
    assert_eq!(ours.unsupported[0].type_name, "bitmap:port");

    // One set by name reads the same as in the full listing.
    let one = with_client(&ns, |c| c.list(&name("netport6")).unwrap());
    let full = ours
        .sets
        .iter()
        .find(|s| s.name.as_str() == "netport6")
        .unwrap();
    assert_eq!(&one, full);
    let err = with_client(&ns, |c| c.list(&name("ports")).unwrap_err());
    assert!(
        matches!(
            err,
            IpsetError {
                kind: IpsetErrorKind::WrongType,
                ..
            }
        ),
        "{err:?}"
    );
}

fn names(ns: &NetNs) -> BTreeSet<String> {
    ns.output("ipset", &["list", "-n"])
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn saved_members(ns: &NetNs, set: &str) -> BTreeSet<String> {
    let save = ns.output("ipset", &["save", set]).unwrap();
    save.lines()
        .filter_map(|l| l.strip_prefix(&format!("add {set} ")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn privileged_flush_rename_swap_destroy() {
    if !privileged("privileged_flush_rename_swap_destroy") {
        return;
    }
    let ns = NetNs::new("ipw-ipset").unwrap();
    let t = SetType::HashIp;
    let (a, b, c) = (name("a"), name("b"), name("c"));
    with_client(&ns, |cl| {
        let plan = [
            Request::create(CreateSet::new(a.clone(), t, Family::V4)),
            Request::create(CreateSet::new(b.clone(), t, Family::V4)),
            Request::add(a.clone(), members(t, &["10.0.0.1", "10.0.0.2"])),
            Request::add(b.clone(), members(t, &["10.0.0.3"])),
        ];
        cl.execute_all(&plan).unwrap();
    });
    assert_eq!(saved_members(&ns, "a").len(), 2);

    with_client(&ns, |cl| cl.flush(&a).unwrap());
    assert!(saved_members(&ns, "a").is_empty());
    assert_eq!(
        saved_members(&ns, "b"),
        BTreeSet::from(["10.0.0.3".to_owned()])
    );

    with_client(&ns, |cl| cl.rename(&a, &c).unwrap());
    assert_eq!(names(&ns), BTreeSet::from(["b".to_owned(), "c".to_owned()]));

    with_client(&ns, |cl| cl.swap(&c, &b).unwrap());
    assert_eq!(
        saved_members(&ns, "c"),
        BTreeSet::from(["10.0.0.3".to_owned()])
    );
    assert!(saved_members(&ns, "b").is_empty());

    with_client(&ns, |cl| cl.destroy(&b, false).unwrap());
    assert_eq!(names(&ns), BTreeSet::from(["c".to_owned()]));

    let errs = with_client(&ns, |cl| {
        let other = name("other");
        cl.create(
            &CreateSet::new(other.clone(), SetType::HashNet, Family::V4),
            false,
        )
        .unwrap();
        vec![
            cl.destroy(&b, false).unwrap_err(),
            cl.rename(&b, &a).unwrap_err(),
            cl.rename(&c, &other).unwrap_err(),
            cl.swap(&c, &b).unwrap_err(),
            cl.swap(&c, &other).unwrap_err(),
            cl.flush(&b).unwrap_err(),
        ]
    });
    assert!(
        matches!(&errs[0], IpsetError { kind: IpsetErrorKind::SetMissing, op: Op::Destroy, set, errno: Some(2), .. } if set == "b")
    );
    assert!(
        matches!(&errs[1], IpsetError { kind: IpsetErrorKind::SetMissing, op: Op::Rename, set, .. } if set == "b")
    );
    assert!(
        matches!(&errs[2], IpsetError { kind: IpsetErrorKind::SetExists, op: Op::Rename, set, errno: Some(4101), .. } if set == "other")
    );
    assert!(
        matches!(&errs[3], IpsetError { kind: IpsetErrorKind::SetMissing, op: Op::Swap, set, errno: Some(4101), .. } if set == "b")
    );
    assert!(matches!(
        &errs[4],
        IpsetError {
            kind: IpsetErrorKind::WrongType,
            op: Op::Swap,
            errno: Some(4102),
            ..
        }
    ));
    assert!(matches!(
        &errs[5],
        IpsetError {
            kind: IpsetErrorKind::SetMissing,
            op: Op::Flush,
            ..
        }
    ));
    // -exist semantics for destroy.
    with_client(&ns, |cl| cl.destroy(&b, true).unwrap());
}

#[test]
fn privileged_typed_errors_name_the_set() {
    if !privileged("privileged_typed_errors_name_the_set") {
        return;
    }
    let ns = NetNs::new("ipw-ipset").unwrap();
    let (s, full, v6) = (name("s"), name("full"), name("v6"));
    let errs = with_client(&ns, |c| {
        let spec = CreateSet::new(s.clone(), SetType::HashIpPort, Family::V4);
        c.create(&spec, false).unwrap();
        c.create(
            &CreateSet::new(full.clone(), SetType::HashIp, Family::V4).maxelem(4),
            false,
        )
        .unwrap();
        c.create(
            &CreateSet::new(v6.clone(), SetType::HashIp, Family::V6),
            false,
        )
        .unwrap();
        let m = members(SetType::HashIpPort, &["10.0.0.1,tcp:80", "10.0.0.2,tcp:80"]);
        c.add(&s, &m, false).unwrap();
        // Same create again: -exist tolerates it, plain create does not.
        c.create(&spec, true).unwrap();
        let five = members(
            SetType::HashIp,
            &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"],
        );
        vec![
            c.add(&name("missing"), &m, false).unwrap_err(),
            c.create(&spec, false).unwrap_err(),
            c.create(&spec.clone().maxelem(10), true).unwrap_err(),
            c.add(&s, &members(SetType::HashIp, &["10.0.0.1"]), false)
                .unwrap_err(),
            c.add(&v6, &members(SetType::HashIp, &["10.0.0.1"]), false)
                .unwrap_err(),
            c.add(&s, &m[1..], false).unwrap_err(),
            c.add(&full, &five, false).unwrap_err(),
            c.del(
                &s,
                &members(SetType::HashIpPort, &["10.0.0.9,tcp:80"]),
                false,
            )
            .unwrap_err(),
            c.add(
                &s,
                &members(SetType::HashIpPort, &["10.0.0.7,tcp:1 timeout 5"]),
                false,
            )
            .unwrap_err(),
        ]
    });
    assert!(
        matches!(&errs[0], IpsetError { kind: IpsetErrorKind::SetMissing, op: Op::Add, set, errno: Some(2), .. } if set == "missing"),
        "{:?}",
        errs[0]
    );
    assert!(
        matches!(&errs[1], IpsetError { kind: IpsetErrorKind::SetExists, op: Op::Create, set, errno: Some(17), .. } if set == "s")
    );
    // -exist does not hide a set that differs from the one asked for.
    assert!(
        matches!(
            &errs[2],
            IpsetError {
                kind: IpsetErrorKind::SetExists,
                ..
            }
        ),
        "{:?}",
        errs[2]
    );
    assert!(
        matches!(&errs[3], IpsetError { kind: IpsetErrorKind::WrongType, set, errno: None, .. } if set == "s")
    );
    assert!(
        matches!(&errs[4], IpsetError { kind: IpsetErrorKind::WrongType, set, errno: None, .. } if set == "v6")
    );
    match &errs[5] {
        IpsetError {
            kind: IpsetErrorKind::MemberExists,
            op: Op::Add,
            set,
            member: Some(m),
            errno: Some(4103),
            ..
        } => {
            assert_eq!(set, "s");
            assert_eq!(m.to_string(), "10.0.0.2,tcp:80");
        }
        e => panic!("{e:?}"),
    }
    match &errs[6] {
        IpsetError {
            kind: IpsetErrorKind::SetFull,
            set,
            member: Some(m),
            errno: Some(4352),
            ..
        } => {
            assert_eq!(set, "full");
            assert_eq!(m.to_string(), "10.0.0.5");
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(saved_members(&ns, "full").len(), 4);
    assert!(matches!(
        &errs[7],
        IpsetError {
            kind: IpsetErrorKind::MemberMissing,
            op: Op::Del,
            errno: Some(4103),
            ..
        }
    ));
    assert!(matches!(
        &errs[8],
        IpsetError { kind: IpsetErrorKind::NoExtension,
            detail: Some(d),
            errno: Some(4107),
            ..
        } if d == "timeout"
    ));
    for e in &errs {
        assert!(e.to_string().contains(&e.set), "{e}");
    }

    // -exist: re-adding and deleting what is gone are no errors.
    with_client(&ns, |c| {
        let m = members(SetType::HashIpPort, &["10.0.0.2,tcp:80", "10.0.0.3,tcp:80"]);
        c.add(&s, &m, true).unwrap();
        c.del(
            &s,
            &members(SetType::HashIpPort, &["10.0.0.9,tcp:80"]),
            true,
        )
        .unwrap();
    });
    assert_eq!(saved_members(&ns, "s").len(), 3);
}

#[test]
fn privileged_destroying_a_set_an_iptables_rule_uses_is_in_use() {
    if !privileged("privileged_destroying_a_set_an_iptables_rule_uses_is_in_use") {
        return;
    }
    let ns = NetNs::new("ipw-ipset").unwrap();
    let s = name("S");
    with_client(&ns, |c| {
        c.create(
            &CreateSet::new(s.clone(), SetType::HashIp, Family::V4),
            false,
        )
        .unwrap()
    });
    ns.output(
        "iptables",
        &[
            "-w",
            "-A",
            "INPUT",
            "-m",
            "set",
            "--match-set",
            "S",
            "dst",
            "-j",
            "ACCEPT",
        ],
    )
    .unwrap();
    let (destroy, rename, listed) = with_client(&ns, |c| {
        (
            c.destroy(&s, false).unwrap_err(),
            c.rename(&s, &name("T")).unwrap_err(),
            c.list(&s).unwrap(),
        )
    });
    assert!(
        matches!(&destroy, IpsetError { kind: IpsetErrorKind::InUse, op: Op::Destroy, set, errno: Some(4100), .. } if set == "S"),
        "{destroy:?}"
    );
    assert!(matches!(
        &rename,
        IpsetError {
            kind: IpsetErrorKind::InUse,
            op: Op::Rename,
            errno: Some(4108),
            ..
        }
    ));
    assert_eq!(listed.stats.unwrap().references, 1);
    assert!(names(&ns).contains("S"));
}

/// Drops CAP_NET_ADMIN from this thread's effective set (capabilities are
/// per thread, so only the test's namespace thread loses it).
fn drop_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut hdr = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data structs, as
    // capabilities(7) documents.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !(1 << CAP_NET_ADMIN);
        assert_eq!(libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()), 0);
    }
}

#[test]
fn privileged_without_cap_net_admin_is_permission() {
    if !privileged("privileged_without_cap_net_admin_is_permission") {
        return;
    }
    let ns = NetNs::new("ipw-ipset").unwrap();
    let errs = ns
        .run(|| {
            drop_net_admin();
            let mut c = IpsetClient::new().unwrap();
            let spec = CreateSet::new(name("p"), SetType::HashIp, Family::V4);
            vec![
                c.list_all().unwrap_err(),
                c.create(&spec, false).unwrap_err(),
                c.destroy(&name("p"), true).unwrap_err(),
            ]
        })
        .unwrap();
    for e in errs {
        assert!(
            matches!(
                e,
                IpsetError {
                    kind: IpsetErrorKind::Permission,
                    errno: Some(1),
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

#[test]
fn privileged_adds_100k_members_in_one_call() {
    if !privileged("privileged_adds_100k_members_in_one_call") {
        return;
    }
    let ns = NetNs::new("ipw-ipset").unwrap();
    let set = name("big");
    let ms: Vec<Element> = (0..100_000u32)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            Element::parse(SetType::HashIpPort, &format!("{ip},tcp:{}", 1 + i % 60_000)).unwrap()
        })
        .collect();
    let listed = with_client(&ns, |c| {
        c.create(
            &CreateSet::new(set.clone(), SetType::HashIpPort, Family::V4).maxelem(200_000),
            false,
        )
        .unwrap();
        c.add(&set, &ms, false).unwrap();
        let header = c.list_header(&set).unwrap();
        assert_eq!(header.stats.unwrap().entries, 100_000);
        assert!(header.members.is_empty());
        assert_eq!(c.list_headers().unwrap().sets, [header]);
        c.list(&set).unwrap()
    });
    let header = ns.output("ipset", &["list", "-t", "big"]).unwrap();
    assert!(
        header.lines().any(|l| l == "Number of entries: 100000"),
        "{header}"
    );
    assert_eq!(listed.stats.unwrap().entries, 100_000);
    assert_eq!(listed.members.len(), 100_000);
    let got: BTreeSet<_> = listed.members.into_iter().collect();
    let want: BTreeSet<_> = ms.into_iter().collect();
    assert!(got == want, "listed members differ from the ones added");
}
