//! The service sets, the VIP firewall chain and the masquerade rules.
//!
//! Rules are written the way `iptables-save` prints them, so an unchanged
//! chain is recognised and not rewritten (a netns test checks this).

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;
use ipwarden_common::{maps::checked_mark, Mode};

use crate::desired::{
    Chain, Family, Jump, Member, MemberServices, MirroredMember, Ownership, Place, ServiceRef,
    SetSpec, SetType, Table, TablePlan, VirtualService, VsKey, FIRST_TAG,
};

use crate::controllers::fragments::{self, Args};

use super::names::{
    CHAIN_POSTROUTING, CHAIN_SERVICES, NO_LOCAL_ENDPOINT, OWNER_TAG, SET_LOCAL_IPS, SET_SVIP,
    SET_SVIP_PRT,
};

/// What the tc program does, for the rules that work with its mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfRules {
    pub mode: Mode,
    pub mark: u32,
}

/// A LoadBalancer frontend restricted to `ranges` (loadBalancerSourceRanges).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceRestriction {
    pub key: VsKey,
    pub ranges: Vec<IpNet>,
}

/// A frontend whose masquerade differs from the rest of IPVS traffic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NatException {
    /// Hairpin: `endpoint`, a pod on this node, reaches itself through
    /// `key`; masqueraded, or it would drop its own packets as martians.
    Hairpin { key: VsKey, endpoint: IpAddr },
    /// externalTrafficPolicy Local: the endpoint sees the client's address.
    KeepSource { key: VsKey },
}

/// A frontend of traffic policy Local without an endpoint on this node:
/// refused (as kube-proxy does) and counted, never sent to another node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unserved {
    pub key: VsKey,
    pub service: ServiceRef,
    /// Held on ipwarden0 (not a NodePort on a node address).
    pub vip: bool,
}

/// svip, svip-prt and local-ips for both families (always all six, so an
/// empty family still has its sets and the chain's matches stay valid).
/// `refused` are addresses of unserved frontends: in svip, so their
/// traffic meets the chain, but never in svip-prt.
pub fn sets<'a>(
    keys: impl Iterator<Item = &'a VsKey> + Clone,
    refused: &BTreeSet<IpAddr>,
    local: &BTreeSet<IpAddr>,
) -> Vec<SetSpec> {
    let mut out = Vec::new();
    for family in Family::ALL {
        let of_family = |a: &IpAddr| Family::of(a) == family;
        out.push(SetSpec {
            name: family.set_name(SET_SVIP),
            set_type: SetType::HashIp,
            family,
            members: keys
                .clone()
                .map(|k| &k.addr)
                .chain(refused)
                .filter(|a| of_family(a))
                .map(|a| Member::ip(*a))
                .collect(),
        });
        out.push(SetSpec {
            name: family.set_name(SET_SVIP_PRT),
            set_type: SetType::HashIpPort,
            family,
            members: keys
                .clone()
                .filter(|k| of_family(&k.addr))
                .map(svip_prt_member)
                .collect(),
        });
        out.push(SetSpec {
            name: family.set_name(SET_LOCAL_IPS),
            set_type: SetType::HashIp,
            family,
            members: local
                .iter()
                .filter(|a| of_family(a))
                .map(|a| Member::ip(*a))
                .collect(),
        });
    }
    out
}

/// A frontend's member of ipwarden-svip-prt: `10.96.0.10,tcp:80`.
pub(super) fn svip_prt_member(key: &VsKey) -> Member {
    Member::ip_port(key.addr, key.proto, key.port)
}

/// The Service behind every member of ipwarden-svip-prt (both families),
/// so the eBPF mirror can tag its entries with it.
pub fn member_services<'a>(
    services: impl IntoIterator<Item = &'a VirtualService>,
) -> MemberServices {
    services
        .into_iter()
        .map(|vs| (svip_prt_member(&vs.key), MirroredMember::of(vs)))
        .collect()
}

/// The filter-table plan of one family: the INPUT jump for VIP traffic and
/// the chain that accepts ICMP and service ports and refuses the rest of
/// the traffic to a VIP.
pub fn filter_plan(
    family: Family,
    restrictions: &[SourceRestriction],
    unserved: &[Unserved],
    bpf: Option<BpfRules>,
) -> TablePlan {
    let reject = fragments::reject(family);
    let restricted: Vec<&SourceRestriction> = restrictions
        .iter()
        .filter(|r| Family::of(&r.key.addr) == family)
        .collect();
    let allow_mark = match bpf {
        Some(BpfRules {
            mode: Mode::Allow,
            mark,
        }) => Some(mark),
        _ => None,
    };
    let mut rules: Vec<String> = fragments::icmp_accepts(family)
        .iter()
        .map(Args::render)
        .collect();
    rules.extend(
        unserved
            .iter()
            .filter(|u| Family::of(&u.key.addr) == family)
            .map(|u| refuse_unserved(u, &reject)),
    );
    for r in &restricted {
        for range in &r.ranges {
            let accept = Args::new().args(&["-s", &range.to_string()]);
            let accept = accept.then(frontend(&r.key)).args(&["-j", "ACCEPT"]);
            rules.push(accept.render());
        }
        rules.push(frontend(&r.key).then(reject.clone()).render());
    }
    // Allow mode: the tc program marked traffic to a mirrored service port;
    // accept it whatever the ipset holds (the rescue of kube-router #1732),
    // as the first rule of INPUT: service traffic meets no other rule. The
    // mark says the chains would accept the packet: the program never
    // marks a member restricted by source ranges (the rules above decide),
    // nor a packet from a local pod whose egress a policy restricts (its
    // chain below decides); docs/ARCHITECTURE.md goes rule by rule.
    let mut jumps = Vec::new();
    if let Some(mark) = allow_mark {
        let rule = format!(
            "-m mark --mark {mark:#x}/{mark:#x} -m comment --comment \"{OWNER_TAG} {FIRST_TAG}\" -j ACCEPT"
        );
        jumps.push(Jump::new("INPUT", rule).at(Place::First));
    }
    let svip_prt = family.set_name(SET_SVIP_PRT);
    let local = family.set_name(SET_LOCAL_IPS);
    rules.push(format!("-m set --match-set {svip_prt} dst,dst -j ACCEPT"));
    if let Some(BpfRules {
        mode: Mode::Log,
        mark,
    }) = bpf
    {
        // Counts mirrored traffic that the ipset did not accept: what an
        // inconsistent set is refusing, seen before the auditor notices.
        rules.push(format!(
            "-m mark --mark {mark:#x}/{mark:#x} -m comment --comment \"ipwarden:bpf-refused\""
        ));
    }
    let not_local = Args::new().args(&["-m", "set", "!", "--match-set", &local, "dst"]);
    rules.push(not_local.then(reject).render());
    let svip = family.set_name(SET_SVIP);
    // The service chain ACCEPTs: last of our block in INPUT, below the
    // policy controller's jump, whose egress rules for local pods must see
    // the packet first.
    if let Some(mark) = allow_mark.map(checked_mark).filter(|m| *m != 0) {
        // What the program marked from an egress-restricted local pod:
        // accepted once the policy chain above let it through (the rescue
        // for those pods too).
        let rule = format!(
            "-m mark --mark {mark:#x}/{mark:#x} -m comment --comment \"{OWNER_TAG}\" -j ACCEPT"
        );
        jumps.push(Jump::new("INPUT", rule).at(Place::Last));
    }
    let rule = format!(
        "-m set --match-set {svip} dst -m comment --comment \"{OWNER_TAG}\" -j {CHAIN_SERVICES}"
    );
    jumps.push(Jump::new("INPUT", rule).at(Place::Last));
    TablePlan {
        family,
        table: Table::Filter,
        owns: vec![Ownership::Names(vec![CHAIN_SERVICES.into()])],
        tag: OWNER_TAG.into(),
        chains: vec![Chain {
            name: CHAIN_SERVICES.into(),
            rules,
        }],
        jumps,
    }
}

/// Masquerade what IPVS forwards in NAT mode, so replies from backends on
/// other nodes come back through this node, except:
/// - hairpin connections are masqueraded first, whatever follows;
/// - traffic from this node's pod CIDRs keeps its source (replies to a
///   local pod come back through this node anyway);
/// - frontends of externalTrafficPolicy Local keep the client's address.
///
/// Rules are written as iptables-save prints them (libxt_ipvs prints
/// `--vproto` before `--vaddr` before `--vport`, a host `--vaddr` without
/// its mask, and drops `--ipvs` once another option is there; checked by
/// `tests/vm_client_source.rs`).
pub fn nat_plan(family: Family, exceptions: &[NatException], pod_cidrs: &[IpNet]) -> TablePlan {
    let of_family = |k: &VsKey| Family::of(&k.addr) == family;
    let vs_match = |k: &VsKey| {
        format!(
            "-m ipvs --vproto {} --vaddr {} --vport {}",
            k.proto.number(),
            k.addr,
            k.port
        )
    };
    let mut rules = Vec::new();
    for e in exceptions {
        if let NatException::Hairpin { key, endpoint } = e {
            if of_family(key) {
                let ep = fragments::host(endpoint);
                rules.push(format!("-s {ep} -d {ep} {} -j MASQUERADE", vs_match(key)));
            }
        }
    }
    rules.extend(
        pod_cidrs
            .iter()
            .filter(|c| Family::of(&c.addr()) == family)
            .map(|c| format!("-s {c} -j RETURN")),
    );
    for e in exceptions {
        if let NatException::KeepSource { key } = e {
            if of_family(key) {
                rules.push(format!("{} -j RETURN", vs_match(key)));
            }
        }
    }
    // iptables-save prints `--ipvs` away: --vdir/--vmethod only match IPVS
    // connections anyway.
    rules.push("-m ipvs --vdir ORIGINAL --vmethod MASQ -j MASQUERADE".into());
    TablePlan {
        family,
        table: Table::Nat,
        owns: vec![Ownership::Names(vec![CHAIN_POSTROUTING.into()])],
        tag: OWNER_TAG.into(),
        chains: vec![Chain {
            name: CHAIN_POSTROUTING.into(),
            rules,
        }],
        jumps: vec![Jump::new(
            "POSTROUTING",
            format!("-m comment --comment \"{OWNER_TAG}\" -j {CHAIN_POSTROUTING}"),
        )],
    }
}

/// REJECTs new connections to an unserved frontend; the comment names the
/// Service so /metrics can count them per Service.
fn refuse_unserved(u: &Unserved, reject: &Args) -> String {
    let (ns, name) = (&u.service.namespace, &u.service.name);
    frontend(&u.key)
        .args(&["-m", "comment", "--comment"])
        .arg(format!("{NO_LOCAL_ENDPOINT}{ns}/{name}"))
        .then(reject.clone())
        .render()
}

/// `-d 10.0.0.1/32 -p tcp -m tcp --dport 80`: one frontend.
fn frontend(key: &VsKey) -> Args {
    let proto = key.proto.to_string();
    Args::new()
        .args(&["-d", &fragments::host(&key.addr)])
        .args(&["-p", &proto, "-m", &proto, "--dport", &key.port.to_string()])
}
