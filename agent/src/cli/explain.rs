//! `ipwarden explain ADDR:PORT[/PROTO] | POD-IP | NAMESPACE/NAME`: why a
//! new connection to a VIP is accepted, rescued or refused today, or which
//! NetworkPolicies isolate a pod and what they let through. It asks the
//! running agent for its desired state (`/state`) and reads the kernel and
//! the pinned mirror itself; with no agent answering it says so, still
//! reports those, and exits non-zero.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::PathBuf,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use ipwarden_common::names;
use serde_json::{json, Value};

use crate::{
    bpf::PinLayout,
    controllers::services::names as svc,
    desired::{Family, Member, Protocol},
    kernel::{
        ipset::{IpsetClient, SetName},
        ipvs::IpvsClient,
        ipvs_sync,
    },
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// `10.96.0.10:80`, `10.96.0.10:53/udp`, `[fd00::10]:80/tcp`, a pod IP,
    /// or a pod as `NAMESPACE/NAME`.
    pub target: String,
    /// The running agent's status address (`--status-bind-address` of
    /// `ipwarden run`); `:PORT` and `localhost:PORT` are this host.
    #[arg(long, default_value = super::run::STATUS_ADDR)]
    pub agent: String,
    #[arg(long, env = "IPWARDEN_BPF_PIN_DIR", default_value = names::DEFAULT_PIN_DIR)]
    pub bpf_pin_dir: PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// What `explain` was asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Vip {
        addr: IpAddr,
        proto: Protocol,
        port: u16,
    },
    Pod(IpAddr),
    /// `NAMESPACE/NAME`.
    PodName(String),
}

pub fn parse_target(s: &str) -> Result<Target> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Target::Pod(ip));
    }
    // An address has a colon; a pod's namespace and name cannot.
    if let Some((namespace, name)) = s.split_once('/').filter(|_| !s.contains(':')) {
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            bail!("{s}: expected NAMESPACE/NAME, ADDR:PORT[/PROTO] or an IP address");
        }
        return Ok(Target::PodName(s.to_string()));
    }
    let (addr, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (
            a,
            Protocol::from_kubernetes(&p.to_uppercase())
                .with_context(|| format!("{s}: unknown protocol {p:?} (tcp, udp, sctp)"))?,
        ),
        None => (s, Protocol::Tcp),
    };
    let sock: SocketAddr = addr
        .parse()
        .with_context(|| format!("{s}: expected ADDR:PORT[/PROTO] or an IP address"))?;
    Ok(Target::Vip {
        addr: sock.ip(),
        proto,
        port: sock.port(),
    })
}

pub fn run(args: &Args) -> Result<()> {
    let target = parse_target(&args.target)?;
    let state = agent_state(&args.agent);
    let report = match &target {
        Target::Vip { addr, proto, port } => vip(args, &state, *addr, *proto, *port),
        Target::Pod(ip) => pod(&state, &PodQuery::Address(ip.to_string())),
        Target::PodName(name) => pod(&state, &PodQuery::Name(name.clone())),
    };
    if args.json {
        println!("{report}");
    } else {
        for line in report["lines"].as_array().into_iter().flatten() {
            println!("{}", line.as_str().unwrap_or_default());
        }
    }
    match state {
        Ok(_) => Ok(()),
        Err(e) => Err(e.context("the running agent could not be asked")),
    }
}

/// The agent's `/state`, or why it could not be read.
pub fn agent_state(addr: &str) -> Result<Value> {
    let sock = super::flags::connect_addr(addr)
        .map_err(|e| super::flags::UsageError(format!("--agent {e}")))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))
        .with_context(|| format!("no agent answers at {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /state HTTP/1.1\r\nHost: ipwarden\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("a malformed answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "the agent at {addr} answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    serde_json::from_str(body).context("the agent's /state is not JSON")
}

/// Is `member` in set `base` of `family`? None when the set cannot be read.
fn in_set(
    client: &mut Option<IpsetClient>,
    family: Family,
    base: &str,
    member: &Member,
) -> Option<bool> {
    let name = SetName::new(family.set_name(base)).ok()?;
    let set = client.as_mut()?.list(&name).ok()?;
    let text = member.to_string();
    Some(set.members.iter().any(|e| e.entry.to_string() == text))
}

fn vip(args: &Args, state: &Result<Value>, addr: IpAddr, proto: Protocol, port: u16) -> Value {
    let family = Family::of(&addr);
    let mut lines = vec![format!("{addr} {proto}:{port}")];
    // What the agent wants.
    let desired = match state {
        Ok(s) => {
            let vs = s["virtual_services"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| {
                    v["address"] == addr.to_string()
                        && v["protocol"] == proto.as_str()
                        && v["port"] == port
                });
            match vs {
                Some(v) => lines.push(format!(
                    "desired: {}, scheduler {}, destinations {}",
                    v["origin"].as_str().unwrap_or_default(),
                    v["scheduler"].as_str().unwrap_or_default(),
                    v["destinations"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|d| format!(
                            "{}:{} weight {}",
                            d["address"].as_str().unwrap_or_default(),
                            d["port"],
                            d["weight"]
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                None => lines.push(
                    "desired: no Service of the running agent has this address and port".into(),
                ),
            }
            vs.cloned()
        }
        Err(e) => {
            lines.push(format!(
                "agent: {e:#}; showing the kernel and the mirror only"
            ));
            None
        }
    };
    // What IPVS holds.
    let key = crate::desired::VsKey { addr, proto, port };
    let ipvs = match IpvsClient::connect() {
        Err(e) => format!("IPVS: unavailable ({e})"),
        Ok(mut c) => {
            let k = ipvs_sync::kernel_key(&key);
            match c.service(&k) {
                Err(_) => "IPVS: no such virtual service".to_string(),
                Ok(entry) => {
                    let dests = c.destinations(&k).unwrap_or_default();
                    format!(
                        "IPVS: {} {}, destinations {}",
                        entry.service.key,
                        entry.service.scheduler,
                        dests
                            .iter()
                            .map(|d| format!(
                                "{}:{} weight {}",
                                d.destination.addr, d.destination.port, d.destination.weight
                            ))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            }
        }
    };
    lines.push(ipvs);
    // What the sets hold.
    let mut client = IpsetClient::new().ok();
    let svip = in_set(&mut client, family, svc::SET_SVIP, &Member::ip(addr));
    let svip_prt = in_set(
        &mut client,
        family,
        svc::SET_SVIP_PRT,
        &Member::ip_port(addr, proto, port),
    );
    let local = in_set(&mut client, family, svc::SET_LOCAL_IPS, &Member::ip(addr));
    let show = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unreadable",
    };
    let member = Member::ip_port(addr, proto, port).to_string();
    lines.push(format!(
        "sets: in {} {}, {member} in {} {}, in {} {}",
        family.set_name(svc::SET_SVIP),
        show(svip),
        family.set_name(svc::SET_SVIP_PRT),
        show(svip_prt),
        family.set_name(svc::SET_LOCAL_IPS),
        show(local)
    ));
    // What the mirror holds.
    let dump = super::bpf_dump::read(&PinLayout::new(&args.bpf_pin_dir)).ok();
    let mode = dump
        .as_ref()
        .and_then(|d| d["mode"].as_str().map(String::from));
    let entry = dump.as_ref().and_then(|d| {
        d["services"]
            .as_array()?
            .iter()
            .find(|r| r["member"] == member.as_str())
            .cloned()
    });
    lines.push(match (&mode, &entry) {
        (None, _) => "mirror: no pinned maps (eBPF off, or another --bpf-pin-dir)".into(),
        (Some(m), None) => format!("mirror (mode {m}): no entry for {member}"),
        (Some(m), Some(e)) => format!(
            "mirror (mode {m}): entry present, {}flagged missing from the kernel, {} packets",
            if e["missing_from_kernel"] == true {
                ""
            } else {
                "not "
            },
            e["packets"]
        ),
    });
    let verdict = verdict(
        svip,
        svip_prt,
        local,
        mode.as_deref(),
        entry.is_some(),
        &member,
        family,
    );
    lines.push(format!("verdict: {verdict}"));
    json!({
        "target": format!("{addr}:{port}/{proto}"),
        "desired": desired,
        "in_svip": svip, "in_svip_prt": svip_prt, "in_local_ips": local,
        "mirror_mode": mode, "mirror_entry": entry,
        "verdict": verdict,
        "lines": lines,
    })
}

/// The verdict a new connection gets from IPWARDEN-SERVICES today.
pub fn verdict(
    svip: Option<bool>,
    svip_prt: Option<bool>,
    local: Option<bool>,
    mode: Option<&str>,
    mirrored: bool,
    member: &str,
    family: Family,
) -> String {
    let prt = family.set_name(svc::SET_SVIP_PRT);
    match (svip, svip_prt, local) {
        (Some(false) | None, _, _) => format!(
            "not a VIP here: {} lacks the address, so IPWARDEN-SERVICES does not look at it",
            family.set_name(svc::SET_SVIP)
        ),
        (_, Some(true), _) => format!("accepted by the set: {prt} holds {member}"),
        _ if mode == Some("allow") && mirrored => format!(
            "rescued by the mark: {prt} lacks {member}, but the tc program marks it (mode allow) and the mark is accepted"
        ),
        (_, _, Some(true)) => "accepted: the address is one of the node's own (local-ips)".into(),
        _ if mode == Some("log") && mirrored => format!(
            "refused by the REJECT: {prt} lacks {member}; mode log reports it (would_be_rejected) until the auditor heals the set"
        ),
        _ => format!("refused by the REJECT: {prt} lacks {member}"),
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The ClusterNetworkPolicies of one tier deciding `direction`, in
/// evaluation order, each rule in written order: the first that matches
/// decides (Accept allows, Deny drops, Pass goes on to the next tier).
fn tier_lines(state: &Value, tier: &str, direction: &str, names: &[&str], lines: &mut Vec<String>) {
    if names.is_empty() {
        return;
    }
    lines.push(format!(
        "{direction}: {tier} tier ({}), first matching rule decides:",
        names.join(", ")
    ));
    for name in names {
        let p = state["cluster_policies"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["policy"] == *name);
        let priority = p.map(|p| p["priority"].to_string()).unwrap_or_default();
        for rule in p.map(|p| strings(&p[direction])).unwrap_or_default() {
            lines.push(format!("  {name} (priority {priority}): {rule}"));
        }
    }
}

/// A pod asked about, by one of its addresses or by name.
enum PodQuery {
    Address(String),
    Name(String),
}

impl PodQuery {
    fn matches(&self, pod: &Value) -> bool {
        match self {
            PodQuery::Name(n) => pod["pod"] == n.as_str(),
            PodQuery::Address(a) => pod["ips"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|ip| ip == a.as_str()),
        }
    }

    fn text(&self) -> &str {
        match self {
            PodQuery::Address(t) | PodQuery::Name(t) => t,
        }
    }
}

fn find<'a>(state: &'a Value, list: &str, query: &PodQuery) -> Option<&'a Value> {
    state[list]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| query.matches(p))
}

fn pod(state: &Result<Value>, query: &PodQuery) -> Value {
    let target = query.text();
    let mut lines = vec![format!("pod {target}")];
    let state = match state {
        Ok(s) => s,
        Err(e) => {
            lines.push(format!(
                "agent: {e:#}; policies come from the agent, nothing to show"
            ));
            return json!({"target": target, "lines": lines});
        }
    };
    let Some(pod) = find(state, "isolated_pods", query) else {
        let node = state["node"].as_str().unwrap_or("this node");
        let line = match find(state, "node_pods", query) {
            Some(p) if p["host_network"] == true => format!(
                "pod {} uses the node's network: NetworkPolicies do not apply to it",
                p["pod"].as_str().unwrap_or_default()
            ),
            Some(p) => format!(
                "pod {}: no NetworkPolicy or ClusterNetworkPolicy selects it, its traffic is not restricted",
                p["pod"].as_str().unwrap_or_default()
            ),
            None if state["node_pods"].is_null() => {
                "no NetworkPolicy or ClusterNetworkPolicy isolates a pod of this node with this address (the agent has not listed the pods yet)".into()
            }
            None => format!(
                "no pod of node {node} is {}: the agent of the pod's own node enforces its policies",
                match query {
                    PodQuery::Address(a) => format!("at {a}"),
                    PodQuery::Name(n) => format!("named {n}"),
                }
            ),
        };
        lines.push(line);
        return json!({"target": target, "isolated": false, "lines": lines});
    };
    if matches!(query, PodQuery::Address(_)) {
        lines.push(format!("pod {}", pod["pod"].as_str().unwrap_or_default()));
    }
    for direction in ["ingress", "egress"] {
        let names = strings(&pod[direction]);
        let admin = strings(&pod["admin"][direction]);
        let baseline = strings(&pod["baseline"][direction]);
        tier_lines(state, "Admin", direction, &admin, &mut lines);
        if names.is_empty() {
            if !admin.is_empty() || !baseline.is_empty() {
                lines.push(format!("{direction}: no NetworkPolicy selects it"));
                tier_lines(state, "Baseline", direction, &baseline, &mut lines);
                lines.push(format!("{direction}: whatever no tier decided is allowed"));
                continue;
            }
            lines.push(format!(
                "{direction}: not isolated (no policy selects it for {direction})"
            ));
            continue;
        }
        lines.push(format!(
            "{direction}: isolated by {}; allowed:",
            names.join(", ")
        ));
        let mut any = false;
        for name in &names {
            let p = state["policies"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["policy"] == *name);
            for rule in p
                .and_then(|p| p[direction].as_array())
                .into_iter()
                .flatten()
            {
                any = true;
                lines.push(format!("  {name}: {}", rule.as_str().unwrap_or_default()));
            }
        }
        if !any {
            lines.push("  nothing (every packet is REJECTed and logged to NFLOG)".into());
        }
    }
    json!({"target": target, "isolated": true, "pod": pod, "lines": lines})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_kubectl_users_write_them() {
        let t = parse_target("10.96.0.10:53/udp").unwrap();
        assert_eq!(
            t,
            Target::Vip {
                addr: "10.96.0.10".parse().unwrap(),
                proto: Protocol::Udp,
                port: 53
            }
        );
        assert!(matches!(
            parse_target("[fd00::1]:80").unwrap(),
            Target::Vip {
                proto: Protocol::Tcp,
                ..
            }
        ));
        assert_eq!(
            parse_target("10.244.1.2").unwrap(),
            Target::Pod("10.244.1.2".parse().unwrap())
        );
        assert_eq!(
            parse_target("shop/api").unwrap(),
            Target::PodName("shop/api".into())
        );
        assert!(parse_target("shop/").is_err());
        assert!(parse_target("10.96.0.10:80/icmp")
            .unwrap_err()
            .to_string()
            .contains("unknown protocol"));
    }

    #[test]
    fn the_verdict_follows_the_sets_and_the_mode() {
        let v = |svip, prt, local, mode, mirrored| {
            verdict(
                svip,
                prt,
                local,
                mode,
                mirrored,
                "203.0.113.10,tcp:80",
                Family::V4,
            )
        };
        assert!(
            v(Some(true), Some(true), Some(false), None, false).starts_with("accepted by the set")
        );
        assert!(v(Some(true), Some(false), Some(false), Some("allow"), true)
            .starts_with("rescued by the mark"));
        assert!(v(Some(true), Some(false), Some(false), Some("log"), true)
            .contains("mode log reports it"));
        assert!(v(Some(true), Some(false), Some(false), None, false)
            .starts_with("refused by the REJECT: ipwarden-svip-prt lacks 203.0.113.10,tcp:80"));
        assert!(v(Some(false), Some(false), Some(false), None, false).starts_with("not a VIP here"));
    }
}
