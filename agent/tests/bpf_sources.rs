//! The tc program's mark means "the chains would accept this": never on a
//! packet from an egress-restricted local pod, never on a member whose
//! source ranges only the chain checks. Checked on frames through
//! BPF_PROG_TEST_RUN and on the pinned maps with bpftool, across an agent
//! restart, and through the store's two phases and auditor.

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf};

use ipwarden::{
    bpf::{self, PinLayout, Pinned, ProgramLogLevel, TcProgram},
    desired::SetType,
    desired::{Family, Member, MemberServices, MirroredMember, Protocol, ServiceRef, SetSpec},
    kernel::ipset::IpsetClient,
    netns::{checked_output, privileged, BpfFs, NetNs},
    store::{MirrorSink, SetStore, SourcePhase, SourceSink},
};
use ipwarden_common::{names, Mode};

const MARK: u32 = 0x40_0000;

fn object() -> PathBuf {
    bpf::object_path_from_env()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

/// An Ethernet frame carrying a TCP SYN from `src`:40000 to `dst`:`port`.
fn tcp_frame(src: IpAddr, dst: IpAddr, port: u16) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&port.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&40u16.to_be_bytes());
            h[8] = 64;
            h[9] = 6;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            f.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86DDu16.to_be_bytes());
            let mut h = [0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&20u16.to_be_bytes());
            h[6] = 6;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            f.extend_from_slice(&h);
        }
        _ => panic!("one family"),
    }
    f.extend_from_slice(&tcp);
    f
}

/// The mark a restricted source's hit gets instead (accepted in INPUT
/// only below the policy chain).
const CHECKED: u32 = MARK << 1;

fn mark_of(dp: &TcProgram, src: &str, dst: &str) -> u32 {
    let run = dp.test_run(&tcp_frame(ip(src), ip(dst), 80), 1).unwrap();
    assert_eq!(run.retval, 0, "never anything but TC_ACT_OK");
    run.mark
}

/// Marked for the first rule of INPUT; a hit that is not gets the checked
/// mark (a restricted source) or none (a range member).
fn marked(dp: &TcProgram, src: &str, dst: &str) -> bool {
    let mark = mark_of(dp, src, dst);
    match mark {
        MARK => true,
        CHECKED => false,
        0 => dst == "198.51.100.7" || panic!("no mark at all from {src} to {dst}"),
        other => panic!("mark {other:#x} from {src} to {dst}"),
    }
}

fn bpftool_dump(pins: &PinLayout, map: &str) -> serde_json::Value {
    let path = pins.map(map);
    let out = checked_output(std::process::Command::new("bpftool").args([
        "-j",
        "map",
        "dump",
        "pinned",
        path.to_str().unwrap(),
    ]))
    .unwrap();
    serde_json::from_str(&out).unwrap()
}

/// The sources in the pinned IPW_EGRESS_SRC, read with bpftool's named
/// fields.
fn pinned_sources(pins: &PinLayout) -> BTreeSet<IpAddr> {
    let dump = bpftool_dump(pins, names::MAP_EGRESS_SOURCES);
    dump.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let f = &e["formatted"];
            assert_eq!(f["value"]["reasons"], 1, "{e}");
            let bytes: Vec<u8> = f["key"]["addr"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect();
            match f["key"]["family"].as_u64() {
                Some(2) => IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]]),
                _ => IpAddr::from(<[u8; 16]>::try_from(bytes).unwrap()),
            }
        })
        .collect()
}

fn set(name: &str, family: Family, t: SetType, members: &[Member]) -> SetSpec {
    SetSpec {
        name: name.into(),
        set_type: t,
        family,
        members: members.iter().copied().collect(),
    }
}

/// Mirrors 10.96.0.10:80 and fd00:96::10:80 (a ClusterIP) and
/// 198.51.100.7:80 (a LoadBalancer IP with source ranges).
fn mirror_members(dp: &mut TcProgram) -> bpf::BpfMirror {
    let mut mirror = dp.take_mirror().unwrap();
    let cluster = Member::ip_port(ip("10.96.0.10"), Protocol::Tcp, 80);
    let cluster6 = Member::ip_port(ip("fd00:96::10"), Protocol::Tcp, 80);
    let lb = Member::ip_port(ip("198.51.100.7"), Protocol::Tcp, 80);
    let info = |chain_decides| MirroredMember {
        service: ServiceRef::new("shop", "web"),
        chain_decides,
    };
    let services: MemberServices = [
        (cluster, info(false)),
        (cluster6, info(false)),
        (lb, info(true)),
    ]
    .into();
    let prt = set(
        "ipwarden-svip-prt",
        Family::V4,
        SetType::HashIpPort,
        &[cluster, lb],
    );
    let prt6 = set(
        "inet6:ipwarden-svip-prt",
        Family::V6,
        SetType::HashIpPort,
        &[cluster6],
    );
    let svip = set(
        "ipwarden-svip",
        Family::V4,
        SetType::HashIp,
        &[Member::ip(ip("10.96.0.10")), Member::ip(ip("198.51.100.7"))],
    );
    let svip6 = set(
        "inet6:ipwarden-svip",
        Family::V6,
        SetType::HashIp,
        &[Member::ip(ip("fd00:96::10"))],
    );
    mirror.mirror(&[&prt, &prt6, &svip, &svip6], &services);
    mirror
}

#[test]
fn restricted_sources_and_range_members_are_never_marked_and_survive_a_restart() {
    if !privileged("restricted_sources_and_range_members_are_never_marked_and_survive_a_restart") {
        return;
    }
    let fs = BpfFs::new("sources").unwrap();
    let pins = PinLayout::new(fs.path());
    let (mut dp, pinned) =
        TcProgram::load_persistent(&object(), ProgramLogLevel::Info, &pins).unwrap();
    assert_eq!(pinned, Pinned::Nothing);
    dp.configure(Mode::Allow, MARK).unwrap();
    let mirror = mirror_members(&mut dp);
    let mut sources = dp.take_sources().unwrap();

    assert!(marked(&dp, "10.244.1.2", "10.96.0.10"));
    assert!(marked(&dp, "fd00:244::2", "fd00:96::10"));
    // Source ranges: the chain decides, from any source; still counted.
    assert_eq!(mark_of(&dp, "192.0.2.1", "198.51.100.7"), 0);
    let lb_key =
        bpf::mirror::key_of_member(&Member::ip_port(ip("198.51.100.7"), Protocol::Tcp, 80))
            .unwrap();
    assert_eq!(mirror.hits(&lb_key).unwrap().packets, 1);

    sources.add(&ips(&["10.244.1.2", "fd00:244::2"]));
    assert_eq!(mark_of(&dp, "10.244.1.2", "10.96.0.10"), CHECKED);
    assert_eq!(mark_of(&dp, "fd00:244::2", "fd00:96::10"), CHECKED);
    assert_eq!(
        mark_of(&dp, "10.244.1.2", "198.51.100.7"),
        0,
        "a range member stays unmarked from any source"
    );
    assert!(marked(&dp, "10.244.1.3", "10.96.0.10"), "another pod");
    assert!(marked(&dp, "fd00:244::3", "fd00:96::10"), "another pod");
    assert_eq!(pinned_sources(&pins), ips(&["10.244.1.2", "fd00:244::2"]));

    // A restart: the pinned content is adopted, not cleared; until the
    // new agent writes anything the restricted pods stay unmarked.
    drop((mirror, sources, dp));
    let (mut dp, pinned) =
        TcProgram::load_persistent(&object(), ProgramLogLevel::Info, &pins).unwrap();
    assert_eq!(pinned, Pinned::Compatible);
    dp.configure(Mode::Allow, MARK).unwrap();
    let _mirror = mirror_members(&mut dp);
    let mut sources = dp.take_sources().unwrap();
    assert!(!marked(&dp, "10.244.1.2", "10.96.0.10"));
    assert!(!marked(&dp, "fd00:244::2", "fd00:96::10"));
    assert_eq!(sources.keys().unwrap().len(), 2);

    // Settled to one: only the difference is written, and the other is
    // marked again.
    assert_eq!(
        sources.settle(&ips(&["fd00:244::2"])),
        2,
        "one entry, one word"
    );
    assert_eq!(sources.settle(&ips(&["fd00:244::2"])), 0, "nothing wrong");
    assert!(marked(&dp, "10.244.1.2", "10.96.0.10"));
    assert!(!marked(&dp, "fd00:244::2", "fd00:96::10"));
    assert_eq!(pinned_sources(&pins), ips(&["fd00:244::2"]));
}

/// Through the store, as the policy controller publishes: a pass adds
/// before its chains and settles after them; the auditor, running between
/// the two, never drops what the pass added.
#[test]
fn the_store_adds_before_the_chains_and_removes_after_them() {
    if !privileged("the_store_adds_before_the_chains_and_removes_after_them") {
        return;
    }
    let ns = NetNs::new("ipw-src").unwrap();
    let fs = BpfFs::new("store-sources").unwrap();
    let pins = PinLayout::new(fs.path());
    ns.run(|| {
        let (mut dp, _) =
            TcProgram::load_persistent(&object(), ProgramLogLevel::Info, &pins).unwrap();
        dp.configure(Mode::Allow, MARK).unwrap();
        let _mirror = mirror_members(&mut dp);
        let store = SetStore::new(IpsetClient::new().unwrap());
        // Published before the data plane was wired (the policy thread
        // came first): the sink gets it when it is wired.
        store.restrict_sources(&ips(&["10.244.1.2"]), SourcePhase::BeforeChains);
        store.set_source_sink(Box::new(dp.take_sources().unwrap()));
        assert!(!marked(&dp, "10.244.1.2", "10.96.0.10"));
        store.restrict_sources(&ips(&["10.244.1.2"]), SourcePhase::AfterChains);

        // A pass: x/b joins, x/a leaves.
        store.restrict_sources(&ips(&["10.244.1.3"]), SourcePhase::BeforeChains);
        assert!(
            !marked(&dp, "10.244.1.2", "10.96.0.10"),
            "a stays until after"
        );
        assert!(
            !marked(&dp, "10.244.1.3", "10.96.0.10"),
            "b before its chain"
        );
        // The auditor in the middle of that pass.
        let report = store.audit().unwrap();
        assert_eq!(report.mirror_entries_wrong, 0);
        assert!(!marked(&dp, "10.244.1.2", "10.96.0.10"));
        assert!(!marked(&dp, "10.244.1.3", "10.96.0.10"));
        store.restrict_sources(&ips(&["10.244.1.3"]), SourcePhase::AfterChains);
        assert!(
            marked(&dp, "10.244.1.2", "10.96.0.10"),
            "a after its chain left"
        );
        assert!(!marked(&dp, "10.244.1.3", "10.96.0.10"));
        assert_eq!(pinned_sources(&pins), ips(&["10.244.1.3"]));

        // Someone deletes the entry behind the agent's back: the auditor
        // counts it and puts it back.
        let path = pins.map(names::MAP_EGRESS_SOURCES);
        let mut args = vec!["map", "delete", "pinned", path.to_str().unwrap(), "key"];
        let key: Vec<String> = [2u8, 0, 0, 0, 10, 244, 1, 3]
            .iter()
            .chain(&[0u8; 12])
            .map(|b| b.to_string())
            .collect();
        args.extend(key.iter().map(String::as_str));
        checked_output(std::process::Command::new("bpftool").args(&args)).unwrap();
        assert!(pinned_sources(&pins).is_empty());
        assert_eq!(store.audit().unwrap().mirror_entries_wrong, 1);
        assert_eq!(pinned_sources(&pins), ips(&["10.244.1.3"]));
    })
    .unwrap();
}
