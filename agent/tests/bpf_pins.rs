//! The eBPF object, its pinned maps and links, checked with bpftool: BTF
//! named fields, adoption across restarts, replacement of another layout.

use std::{net::IpAddr, path::PathBuf};

use ipwarden::{
    bpf::{self, PinLayout, Pinned, ProgramLogLevel, TcProgram},
    desired::{
        Family, Member, MemberServices, MirroredMember, Protocol, ServiceRef, SetSpec, SetType,
    },
    netns::{checked_output, privileged, BpfFs, NetNs},
    store::MirrorSink,
};
use ipwarden_common::{names, Mode};

fn object() -> PathBuf {
    bpf::object_path_from_env()
}

fn bpftool(args: &[&str]) -> String {
    checked_output(std::process::Command::new("bpftool").args(args)).unwrap()
}

fn dump(pins: &PinLayout, map: &str) -> serde_json::Value {
    let path = pins.map(map);
    serde_json::from_str(&bpftool(&[
        "-j",
        "map",
        "dump",
        "pinned",
        path.to_str().unwrap(),
    ]))
    .unwrap()
}

/// One element of a pinned array map, as bpftool prints it.
fn lookup(pins: &PinLayout, map: &str, index: u32) -> serde_json::Value {
    let path = pins.map(map);
    let key: Vec<String> = index.to_le_bytes().iter().map(|b| b.to_string()).collect();
    let mut args = vec![
        "-j",
        "map",
        "lookup",
        "pinned",
        path.to_str().unwrap(),
        "key",
    ];
    args.extend(key.iter().map(String::as_str));
    serde_json::from_str(&bpftool(&args)).unwrap()
}

fn spec(name: &str, t: SetType, members: &[Member]) -> SetSpec {
    SetSpec {
        name: name.into(),
        set_type: t,
        family: Family::V4,
        members: members.iter().copied().collect(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn the_object_loads_with_bpftool_and_carries_btf() {
    if !privileged("the_object_loads_with_bpftool_and_carries_btf") {
        return;
    }
    let obj = object();
    let btf = bpftool(&["btf", "dump", "file", obj.to_str().unwrap()]);
    for s in [
        "STRUCT 'ServiceKey'",
        "STRUCT 'ServiceValue'",
        "STRUCT 'VipKey'",
        "STRUCT 'Config'",
    ] {
        assert!(btf.contains(s), "{s} missing from the object's BTF");
    }
    let fs = BpfFs::new("loadall").unwrap();
    let target = fs.path().join("progs");
    let maps = fs.path().join("maps");
    let out = std::process::Command::new("bpftool")
        .args(["prog", "loadall"])
        .arg(&obj)
        .arg(&target)
        .arg("pinmaps")
        .arg(&maps)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the verifier refused the object: {stderr}"
    );
    // libbpf carries on without BTF when the kernel refuses it, so ask
    // the kernel what it holds: a BTF id on the program and every map.
    let btf_id = |what: &str, path: &std::path::Path| -> u64 {
        let shown = bpftool(&["-j", what, "show", "pinned", path.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
        v["btf_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{} has no BTF in the kernel: {v}", path.display()))
    };
    btf_id("prog", &target.join(names::PROG_INGRESS));
    for map in names::PINNED_MAPS {
        btf_id("map", &maps.join(map));
    }
}

#[test]
fn pinned_maps_dump_with_named_fields_and_are_adopted_on_restart() {
    if !privileged("pinned_maps_dump_with_named_fields_and_are_adopted_on_restart") {
        return;
    }
    let fs = BpfFs::new("adopt").unwrap();
    let pins = PinLayout::new(fs.path());
    let (mut dp, pinned) =
        TcProgram::load_persistent(&object(), ProgramLogLevel::Info, &pins).unwrap();
    assert_eq!(pinned, Pinned::Nothing);
    dp.configure(Mode::Allow, 0x40_0000).unwrap();
    let mut mirror = dp.take_mirror().unwrap();
    let http = Member::ip_port(ip("10.96.0.10"), Protocol::Tcp, 80);
    let dns = Member::ip_port(ip("10.96.0.10"), Protocol::Udp, 53);
    let prt = spec("ipwarden-svip-prt", SetType::HashIpPort, &[http, dns]);
    let svip = spec(
        "ipwarden-svip",
        SetType::HashIp,
        &[Member::ip(ip("10.96.0.10"))],
    );
    let web = ServiceRef::new("shop", "web");
    let services: MemberServices = [(
        http,
        MirroredMember {
            service: web.clone(),
            chain_decides: false,
        },
    )]
    .into();
    mirror.mirror(&[&prt, &svip], &services);

    let services = dump(&pins, names::MAP_SERVICES);
    let keys: Vec<&serde_json::Value> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["formatted"]["key"])
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(keys
        .iter()
        .any(|k| k["port"] == 53 && k["proto"] == 17 && k["family"] == 2 && k["addr"][1] == 96));
    assert_eq!(services[0]["formatted"]["value"]["flags"], 0);
    let id_of = |port: u64| {
        services
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["formatted"]["key"]["port"] == port)
            .map(|e| e["formatted"]["value"]["service_id"].clone())
            .unwrap()
    };
    assert_eq!(
        id_of(80),
        bpf::mirror::service_id(&web),
        "the entry names the Service its member serves"
    );
    assert_eq!(id_of(53), 0, "no Service was named for the DNS member");
    let vips = dump(&pins, names::MAP_VIPS);
    assert_eq!(vips[0]["formatted"]["key"]["addr"][0], 10);
    let config = dump(&pins, names::MAP_CONFIG);
    let c = &config[0]["formatted"]["value"];
    assert_eq!(
        (c["mode"].as_u64(), c["mark"].as_u64()),
        (Some(2), Some(0x40_0000))
    );
    assert_eq!(c["layout_version"], ipwarden_common::maps::LAYOUT_VERSION);
    let stats = dump(&pins, names::MAP_STATS);
    assert!(
        stats[0]["formatted"]["values"][0]["value"]
            .get("mirror_hits")
            .is_some(),
        "{stats}"
    );
    // No traffic yet. Since layout 3 the counters are a per-CPU array,
    // indexed by each member's slot in the classifier's table, so every
    // slot is there, all zero (before, a per-CPU hash with no entry yet).
    let hits = dump(&pins, names::MAP_HITS);
    let counted: u64 = hits
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["formatted"]["values"].as_array().unwrap())
        .map(|v| v["value"]["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 0, "no traffic, no hits");

    // The classifier's table: both members in one of their two buckets
    // of the active half, with named fields (and each its own slot).
    let active = c["active"].as_u64().unwrap() as u32;
    let seed = c["seeds"][active as usize].as_u64().unwrap() as u32;
    let mut slots = Vec::new();
    for (proto, port) in [(6, 80), (17, 53)] {
        let key = ipwarden_common::ServiceKey::v4([10, 96, 0, 10], proto, port);
        let (b1, b2) = bpf::table::buckets_of(&key, seed);
        let found = [b1, b2]
            .iter()
            .flat_map(|b| {
                let index = active * ipwarden_common::maps::TABLE_BUCKETS + b;
                lookup(&pins, names::MAP_TABLE, index)["formatted"]["value"]["entries"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .find(|e| e["key"]["port"] == port && e["key"]["proto"] == proto)
            .unwrap_or_else(|| panic!("{proto}/{port} is in neither of its buckets"));
        assert_eq!(found["key"]["family"], 2);
        assert_eq!(found["flags"], 0);
        slots.push(found["slot"].as_u64().unwrap());
    }
    assert_ne!(slots[0], slots[1], "each member counts in its own slot");

    // A new agent adopts the pinned maps: the mirror is still there.
    drop(mirror);
    drop(dp);
    let (_dp, pinned) =
        TcProgram::load_persistent(&object(), ProgramLogLevel::Info, &pins).unwrap();
    assert_eq!(pinned, Pinned::Compatible);
    assert_eq!(
        dump(&pins, names::MAP_SERVICES).as_array().unwrap().len(),
        2
    );
}

#[test]
fn a_pinned_map_of_another_layout_is_replaced_not_misread() {
    if !privileged("a_pinned_map_of_another_layout_is_replaced_not_misread") {
        return;
    }
    let fs = BpfFs::new("layout").unwrap();
    let pins = PinLayout::new(fs.path());
    pins.create().unwrap();
    // An older agent's mirror whose value had no service id (4 bytes).
    let path = pins.map(names::MAP_SERVICES);
    bpftool(&[
        "map",
        "create",
        path.to_str().unwrap(),
        "type",
        "hash",
        "key",
        "20",
        "value",
        "4",
        "entries",
        "1024",
        "name",
        "IPW_SVC_PORTS",
    ]);
    let (_dp, pinned) =
        TcProgram::load_persistent(&object(), ProgramLogLevel::Info, &pins).unwrap();
    match &pinned {
        Pinned::Replaced(why) => assert!(
            why.contains("IPW_SVC_PORTS") && why.contains("value 4 B"),
            "{why}"
        ),
        other => panic!("expected a replacement, got {other:?}"),
    }
    let info: serde_json::Value = serde_json::from_str(&bpftool(&[
        "-j",
        "map",
        "show",
        "pinned",
        path.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(info["bytes_value"], 8, "{info}");
    assert_eq!(info["max_entries"], 65536);
}

#[test]
fn a_pinned_tcx_link_is_reused_by_the_next_agent() {
    if !privileged("a_pinned_tcx_link_is_reused_by_the_next_agent") {
        return;
    }
    let ns = NetNs::new("ipw-pins-link").unwrap();
    let peer = NetNs::new("ipw-pins-peer").unwrap();
    ns.veth_to(
        &peer,
        ("veth0", &["10.203.0.1/24"]),
        ("veth1", &["10.203.0.2/24"]),
    )
    .unwrap();
    let fs = BpfFs::new("link").unwrap();
    let pins = PinLayout::new(fs.path());
    // Debian's bpftool (7.1) predates TCX: ask the kernel through aya.
    let links_on_veth = || -> usize {
        ns.run(|| {
            let (_, progs) = aya::programs::SchedClassifier::query_tcx(
                "veth0",
                aya::programs::TcAttachType::Ingress,
            )
            .unwrap();
            progs
                .iter()
                // The kernel keeps 15 bytes of a program's name.
                .filter(|p| p.name_as_str() == Some(&names::PROG_INGRESS[..15]))
                .count()
        })
        .unwrap()
    };
    for round in 0..2 {
        let attachment = ns
            .run(|| {
                let (mut dp, _) =
                    TcProgram::load_persistent(&object(), ProgramLogLevel::Info, &pins).unwrap();
                dp.attach_ingress_persistent("veth0", &pins).unwrap()
                // dp dropped here: the agent is gone, the link stays.
            })
            .unwrap();
        assert_eq!(attachment, bpf::Attachment::Tcx, "this host kernel has TCX");
        assert!(pins.link("veth0").exists());
        assert_eq!(
            links_on_veth(),
            1,
            "round {round}: one attachment, not {}",
            links_on_veth()
        );
    }
}

/// The mark the allow-mode tests configure.
const MARK: u32 = 0x40_0000;

/// The address `udp_frame` sends to.
const UDP_VIP: &str = "10.96.0.10";

/// The program loaded (not pinned) in allow mode with [`MARK`].
fn allow_program() -> TcProgram {
    let mut dp = TcProgram::load(&object(), ProgramLogLevel::Info).unwrap();
    dp.configure(Mode::Allow, MARK).unwrap();
    dp
}

/// The svip-prt member `udp_frame(port)` is sent to.
fn udp_port(port: u16) -> Member {
    Member::ip_port(ip(UDP_VIP), Protocol::Udp, port)
}

/// Whether the program marks `udp_frame(port)`.
fn marked(dp: &TcProgram, port: u16) -> bool {
    dp.test_run(&udp_frame(port), 1).unwrap().mark & MARK != 0
}

/// An Ethernet frame carrying UDP to 10.96.0.10:`port` (for
/// BPF_PROG_TEST_RUN: the program sees it as it would on the wire).
fn udp_frame(port: u16) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(20u16 + 8 + 4).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, 2]);
    ip[16..20].copy_from_slice(&[10, 96, 0, 10]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&12u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 1, 2, 3, 4]);
    f
}

#[test]
fn mirror_changes_reach_the_classifier_and_counts_survive_a_restart() {
    if !privileged("mirror_changes_reach_the_classifier_and_counts_survive_a_restart") {
        return;
    }
    use ipwarden_common::{maps::PROTO_UDP, ServiceKey, ServiceValue};
    let fs = BpfFs::new("flip").unwrap();
    let pins = PinLayout::new(fs.path());
    let key = |port: u16| ServiceKey::v4([10, 96, 0, 10], PROTO_UDP, port);

    let (mut dp, _) = TcProgram::load_persistent(&object(), ProgramLogLevel::Info, &pins).unwrap();
    dp.configure(Mode::Allow, MARK).unwrap();
    dp.services()
        .unwrap()
        .insert_all([
            (key(53), ServiceValue::default()),
            (key(54), ServiceValue::default()),
        ])
        .unwrap();
    assert!(marked(&dp, 53) && marked(&dp, 54) && !marked(&dp, 55));
    for _ in 0..4 {
        dp.test_run(&udp_frame(54), 1).unwrap();
    }
    // Each change is a new half of the table: a removed member stops
    // being marked at once, the others keep their counts.
    dp.services().unwrap().remove(&key(53)).unwrap();
    assert!(!marked(&dp, 53) && marked(&dp, 54));
    let m = dp.services().unwrap();
    assert_eq!(m.hits(&key(53)).unwrap().packets, 0, "no longer mirrored");
    assert_eq!(m.hits(&key(54)).unwrap().packets, 6);

    // A new agent adopts the maps: same table, same counter slots.
    drop(dp);
    let (mut dp, pinned) =
        TcProgram::load_persistent(&object(), ProgramLogLevel::Info, &pins).unwrap();
    assert_eq!(pinned, Pinned::Compatible);
    dp.configure(Mode::Allow, MARK).unwrap();
    assert!(marked(&dp, 54) && !marked(&dp, 53));
    assert_eq!(dp.services().unwrap().hits(&key(54)).unwrap().packets, 7);
    // A member added later counts from zero, whichever slot it gets.
    for port in [55, 56] {
        dp.services()
            .unwrap()
            .insert(key(port), ServiceValue::default())
            .unwrap();
    }
    assert!(marked(&dp, 55) && marked(&dp, 56));
    let m = dp.services().unwrap();
    assert_eq!(m.hits(&key(55)).unwrap().packets, 1);
    assert_eq!(m.hits(&key(56)).unwrap().packets, 1);
    assert_eq!(m.hits(&key(54)).unwrap().packets, 7);
}

#[test]
fn partial_mirror_changes_reach_the_classifiers_table() {
    if !privileged("partial_mirror_changes_reach_the_classifiers_table") {
        return;
    }
    use ipwarden::desired::SetDelta;
    let mut dp = allow_program();
    let mut mirror = dp.take_mirror().unwrap();
    let vip = ip(UDP_VIP);
    let port = udp_port;

    // A full sync of one member, then the store's partial path: one
    // member in, one out, and the VIP with them.
    let prt = spec("ipwarden-svip-prt", SetType::HashIpPort, &[port(53)]);
    let svip = spec("ipwarden-svip", SetType::HashIp, &[Member::ip(vip)]);
    mirror.mirror(&[&prt, &svip], &MemberServices::new());
    assert!(marked(&dp, 53) && !marked(&dp, 54));
    let delta = SetDelta {
        set: "ipwarden-svip-prt".into(),
        add: vec![port(54)],
        del: vec![port(53)],
    };
    mirror.mirror_changes(&[&delta], &MemberServices::new());
    assert!(!marked(&dp, 53), "a removed member is no longer marked");
    assert!(marked(&dp, 54), "an added member is marked at once");
    let gone = SetDelta {
        set: "ipwarden-svip-prt".into(),
        add: vec![],
        del: vec![port(54)],
    };
    let vip_gone = SetDelta {
        set: "ipwarden-svip".into(),
        add: vec![],
        del: vec![Member::ip(vip)],
    };
    mirror.mirror_changes(&[&gone, &vip_gone], &MemberServices::new());
    assert!(!marked(&dp, 54) && !marked(&dp, 53));
    assert_eq!(mirror.errors(), 0);
}

#[test]
fn many_rounds_of_member_changes_keep_both_halves_exact() {
    if !privileged("many_rounds_of_member_changes_keep_both_halves_exact") {
        return;
    }
    use ipwarden::desired::SetDelta;
    use std::collections::BTreeSet;
    let mut dp = allow_program();
    let mut mirror = dp.take_mirror().unwrap();
    let vip = ip(UDP_VIP);
    let port = udp_port;
    let ports = 1000u16..1300;

    let mut present: BTreeSet<u16> = ports.clone().step_by(2).collect();
    let members: Vec<Member> = present.iter().map(|p| port(*p)).collect();
    let prt = spec("ipwarden-svip-prt", SetType::HashIpPort, &members);
    let svip = spec("ipwarden-svip", SetType::HashIp, &[Member::ip(vip)]);
    mirror.mirror(&[&prt, &svip], &MemberServices::new());
    // Each round's changes go into the half the classifier does not read,
    // which missed the round before: after every round, both halves have
    // been written from deltas only, and each must say exactly what the
    // set holds.
    for round in 0..8u16 {
        let (add, del): (Vec<u16>, Vec<u16>) = ports
            .clone()
            .filter(|p| (p / 3 + round) % 5 == 0)
            .partition(|p| !present.contains(p));
        for p in &add {
            present.insert(*p);
        }
        for p in &del {
            present.remove(p);
        }
        let delta = SetDelta {
            set: "ipwarden-svip-prt".into(),
            add: add.iter().map(|p| port(*p)).collect(),
            del: del.iter().map(|p| port(*p)).collect(),
        };
        mirror.mirror_changes(&[&delta], &MemberServices::new());
        for p in ports.clone() {
            assert_eq!(
                marked(&dp, p),
                present.contains(&p),
                "round {round}, port {p}"
            );
        }
    }
    let all_gone = SetDelta {
        set: "ipwarden-svip-prt".into(),
        add: vec![],
        del: present.iter().map(|p| port(*p)).collect(),
    };
    let vip_gone = SetDelta {
        set: "ipwarden-svip".into(),
        add: vec![],
        del: vec![Member::ip(vip)],
    };
    mirror.mirror_changes(&[&all_gone, &vip_gone], &MemberServices::new());
    assert!(ports.clone().all(|p| !marked(&dp, p)));
    assert_eq!(mirror.errors(), 0);
}

/// The whole publish of a full sync writes both halves of the classifier's
/// table (the second a copy of the first, after the flip), so the first
/// change after it writes only the buckets it moves instead of laying out
/// the whole table: each member is in one of its two buckets, and its
/// address's bit is set, in both halves, each under its own half's seed,
/// as bpftool reads them.
#[test]
fn a_full_mirror_writes_both_halves_of_the_classifiers_table() {
    if !privileged("a_full_mirror_writes_both_halves_of_the_classifiers_table") {
        return;
    }
    use ipwarden_common::{
        maps::{addr_words, vip_bit, vip_hash, PROTO_TCP, TABLE_BUCKETS, VIP_BITMAP_WORDS},
        ServiceKey,
    };
    let fs = BpfFs::new("halves").unwrap();
    let pins = PinLayout::new(fs.path());
    let (mut dp, _) = TcProgram::load_persistent(&object(), ProgramLogLevel::Info, &pins).unwrap();
    dp.configure(Mode::Allow, 0x40_0000).unwrap();
    let mut mirror = dp.take_mirror().unwrap();
    let addr = [10, 96, 0, 20];
    let ports = 8000u16..8008;
    let vip = IpAddr::from(addr);
    let members: Vec<Member> = ports
        .clone()
        .map(|p| Member::ip_port(vip, Protocol::Tcp, p))
        .collect();
    let prt = spec("ipwarden-svip-prt", SetType::HashIpPort, &members);
    let svip = spec("ipwarden-svip", SetType::HashIp, &[Member::ip(vip)]);
    mirror.mirror(&[&prt, &svip], &MemberServices::new());

    let config = dump(&pins, names::MAP_CONFIG);
    let c = &config[0]["formatted"]["value"];
    for half in 0..2u32 {
        let seed = c["seeds"][half as usize].as_u64().unwrap() as u32;
        assert_ne!(seed, 0, "half {half} has no seed: {c}");
        for port in ports.clone() {
            let key = ServiceKey::v4(addr, PROTO_TCP, port);
            let (b1, b2) = bpf::table::buckets_of(&key, seed);
            let found = [b1, b2].iter().any(|b| {
                let index = half * TABLE_BUCKETS + b;
                lookup(&pins, names::MAP_TABLE, index)["formatted"]["value"]["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["key"]["port"] == port && e["key"]["proto"] == PROTO_TCP)
            });
            assert!(
                found,
                "half {half}: tcp/{port} is in neither of its buckets"
            );
        }
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&addr);
        let (word, bit) = vip_bit(vip_hash(&addr_words(&a), false, seed));
        let value = &lookup(&pins, names::MAP_VIP_BITS, half * VIP_BITMAP_WORDS + word)
            ["formatted"]["value"];
        let bits = value.as_u64().unwrap_or_else(|| panic!("a word: {value}"));
        assert_eq!(bits >> bit & 1, 1, "half {half}: the VIP's bit is not set");
    }
    assert_eq!(mirror.errors(), 0);
}

/// The bytes of every mapping of a BPF map in this process, from
/// /proc/self/maps (other tests of this binary may hold a window or two).
fn bpf_map_mappings() -> u64 {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.ends_with("bpf-map"))
        .map(|l| {
            let range = l.split(' ').next().unwrap();
            let (start, end) = range.split_once('-').unwrap();
            u64::from_str_radix(end, 16).unwrap() - u64::from_str_radix(start, 16).unwrap()
        })
        .sum()
}

/// The kernel maps every page of a mapped array map at once and counts it
/// in the mapping process's RSS: the classifier's table (8 MiB for both
/// halves) is reached through small windows unmapped after each write, so
/// it never stays in the agent's memory.
#[test]
fn the_classifiers_table_is_not_kept_mapped_in_the_agent() {
    if !privileged("the_classifiers_table_is_not_kept_mapped_in_the_agent") {
        return;
    }
    use ipwarden::desired::SetDelta;
    let mut dp = allow_program();
    let mut mirror = dp.take_mirror().unwrap();
    let vip = ip(UDP_VIP);
    let port = udp_port;
    let members: Vec<Member> = (2000..3000).map(port).collect();
    let prt = spec("ipwarden-svip-prt", SetType::HashIpPort, &members);
    let svip = spec("ipwarden-svip", SetType::HashIp, &[Member::ip(vip)]);
    mirror.mirror(&[&prt, &svip], &MemberServices::new());
    let delta = SetDelta {
        set: "ipwarden-svip-prt".into(),
        add: vec![port(3000)],
        del: vec![port(2000)],
    };
    mirror.mirror_changes(&[&delta], &MemberServices::new());
    let marked = |p: u16| dp.test_run(&udp_frame(p), 1).unwrap().mark & MARK != 0;
    assert!(marked(3000) && marked(2999) && !marked(2000));
    assert_eq!(mirror.errors(), 0);
    let mapped = bpf_map_mappings();
    assert!(
        mapped < 2 << 20,
        "{mapped} bytes of BPF maps mapped while the mirror is idle"
    );
}
