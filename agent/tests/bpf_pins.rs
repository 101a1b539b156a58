//! The eBPF object, its pinned maps and links, checked with bpftool: BTF
//! named fields, adoption across restarts, replacement of another layout.

use std::{net::IpAddr, path::PathBuf};

use ipwarden::{
    bpf::{self, Dataplane, PinLayout, Pinned, ProgramLogLevel},
    desired::{Family, Member, MemberServices, Protocol, ServiceRef, SetSpec, SetType},
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
    let out = std::process::Command::new("bpftool")
        .args(["prog", "loadall"])
        .arg(&obj)
        .arg(&target)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the verifier refused the object: {stderr}"
    );
    assert!(
        !stderr.contains("BTF loading error"),
        "the kernel refused the BTF: {stderr}"
    );
    assert!(target.join(names::PROG_INGRESS).exists());
}

#[test]
fn pinned_maps_dump_with_named_fields_and_are_adopted_on_restart() {
    if !privileged("pinned_maps_dump_with_named_fields_and_are_adopted_on_restart") {
        return;
    }
    let fs = BpfFs::new("adopt").unwrap();
    let pins = PinLayout::new(fs.path());
    let (mut dp, pinned) =
        Dataplane::load_persistent(&object(), ProgramLogLevel::Info, &pins).unwrap();
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
    let services: MemberServices = [(http, web.clone())].into();
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
    let hits = dump(&pins, names::MAP_HITS);
    assert!(hits.as_array().unwrap().is_empty());

    // A new agent adopts the pinned maps: the mirror is still there.
    drop(mirror);
    drop(dp);
    let (_dp, pinned) =
        Dataplane::load_persistent(&object(), ProgramLogLevel::Info, &pins).unwrap();
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
        Dataplane::load_persistent(&object(), ProgramLogLevel::Info, &pins).unwrap();
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
                    Dataplane::load_persistent(&object(), ProgramLogLevel::Info, &pins).unwrap();
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
