//! `ipwarden bpf dump [--json]`: the pinned mirror with its hit counters,
//! the config and the classifier's totals; each member's Service named
//! `namespace/name` from the running agent's /state (the map holds only a
//! hash of it).

use std::{collections::BTreeMap, net::IpAddr, os::fd::AsFd, path::PathBuf};

use anyhow::{bail, Context, Result};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use ipwarden_common::{
    maps::{FAMILY_V4, FLAG_CHAIN_DECIDES, FLAG_MISSING_FROM_KERNEL},
    names, Config, HitCounter, ServiceKey, ServiceValue, SourceKey, SourceValue, Stats,
};

use crate::bpf::{table::FastTable, PinLayout};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, env = "IPWARDEN_BPF_PIN_DIR", default_value = names::DEFAULT_PIN_DIR)]
    pub bpf_pin_dir: PathBuf,
    /// The running agent's status address, for the Services' names.
    #[arg(long, default_value = super::run::STATUS_ADDR)]
    pub agent: String,
    #[arg(long)]
    pub json: bool,
}

fn open(pins: &PinLayout, name: &str) -> Result<MapData> {
    MapData::from_pin(pins.map(name))
        .with_context(|| format!("opening pinned map {}", pins.map(name).display()))
}

fn addr(k: &ServiceKey) -> IpAddr {
    ip(k.family, &k.addr)
}

fn ip(family: u8, a: &[u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::from([a[0], a[1], a[2], a[3]])
    } else {
        IpAddr::from(*a)
    }
}

/// The egress-restricted sources, sorted as text.
fn restricted_sources(pins: &PinLayout) -> Result<Vec<String>> {
    let map: HashMap<_, SourceKey, SourceValue> =
        HashMap::try_from(Map::HashMap(open(pins, names::MAP_EGRESS_SOURCES)?))?;
    let mut out = Vec::new();
    for key in map.keys() {
        let k = key?;
        out.push(ip(k.family, &k.addr).to_string());
    }
    out.sort();
    Ok(out)
}

fn proto(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

pub fn run(args: &Args) -> Result<()> {
    let pins = PinLayout::new(&args.bpf_pin_dir);
    if !pins.map(names::MAP_SERVICES).exists() {
        bail!("{}", nothing_pinned(&pins));
    }
    let mut dump = read(&pins)?;
    match super::explain::agent_state(&args.agent) {
        Ok(state) => name_services(&mut dump, &state),
        Err(e) => eprintln!("Services shown by hash: {e:#}"),
    }
    if args.json {
        println!("{dump}");
        return Ok(());
    }
    print(&dump);
    Ok(())
}

/// Why no map is pinned under `pins`: no bpffs there (`ip netns exec`
/// remounts /sys, hiding the node's), or no agent has pinned one.
fn nothing_pinned(pins: &PinLayout) -> String {
    let root = pins.root().display();
    let on_bpffs = pins
        .root()
        .ancestors()
        .find(|dir| dir.exists())
        .and_then(|dir| nix::sys::statfs::statfs(dir).ok())
        .is_some_and(|fs| fs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC);
    if on_bpffs {
        format!(
            "no agent has pinned the eBPF maps under {root}: `ipwarden run` pins them there \
             while its service proxy runs with --bpf-mode log or allow (and leaves them when it exits); \
             an agent with another --bpf-pin-dir needs the same here"
        )
    } else {
        format!(
            "no eBPF maps under {root}: no bpffs is mounted there (under `ip netns exec`, /sys is \
             remounted and hides the node's /sys/fs/bpf); pass the --bpf-pin-dir the agent used"
        )
    }
}

/// The pinned mirror, config and totals as JSON (also what `explain`
/// looks a member up in).
pub fn read(pins: &PinLayout) -> Result<serde_json::Value> {
    let services: HashMap<_, ServiceKey, ServiceValue> =
        HashMap::try_from(Map::HashMap(open(pins, names::MAP_SERVICES)?))?;
    let hits: PerCpuArray<_, HitCounter> =
        PerCpuArray::try_from(Map::PerCpuArray(open(pins, names::MAP_HITS)?))?;
    let config: Array<_, Config> = Array::try_from(Map::Array(open(pins, names::MAP_CONFIG)?))?;
    let c = config.get(&0, 0)?;
    // The counter slot of each member, from the half the classifier reads.
    let (table, bits) = (
        open(pins, names::MAP_TABLE)?,
        open(pins, names::MAP_VIP_BITS)?,
    );
    let slots: BTreeMap<ServiceKey, u32> = FastTable::new(table.fd().as_fd(), bits.fd().as_fd())
        .context("mapping the classifier's table")?
        .entries(c.active)
        .context("reading the classifier's table")?
        .into_iter()
        .map(|e| (e.key, e.slot))
        .collect();
    let stats: PerCpuArray<_, Stats> =
        PerCpuArray::try_from(Map::PerCpuArray(open(pins, names::MAP_STATS)?))?;

    let mut rows = Vec::new();
    for entry in services.iter() {
        let (k, v) = entry?;
        let slot = slots.get(&k);
        let (packets, bytes) = slot
            .and_then(|slot| hits.get(slot, 0).ok())
            .map(|per_cpu| {
                per_cpu
                    .iter()
                    .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes))
            })
            .unwrap_or((0, 0));
        rows.push(serde_json::json!({
            "member": format!("{},{}:{}", addr(&k), proto(k.proto), k.port),
            "missing_from_kernel": v.flags & FLAG_MISSING_FROM_KERNEL != 0,
            "chain_decides": v.flags & FLAG_CHAIN_DECIDES != 0,
            "service_id": v.service_id,
            // Where its counters are in IPW_HITS (for `bpftool map lookup`).
            "slot": slot,
            "packets": packets,
            "bytes": bytes,
        }));
    }
    rows.sort_by(|a, b| a["member"].as_str().cmp(&b["member"].as_str()));
    // The classifier counts hits per member only (layout 3): their sum
    // is the mirror's total.
    let member_hits: u64 = rows.iter().filter_map(|r| r["packets"].as_u64()).sum();
    let totals = stats.get(&0, 0)?.iter().fold(
        Stats {
            mirror_hits: member_hits,
            ..Stats::default()
        },
        |t, s| Stats {
            mirror_hits: t.mirror_hits + s.mirror_hits,
            missing_hits: t.missing_hits + s.missing_hits,
            vip_other_port: t.vip_other_port + s.vip_other_port,
            events_dropped: t.events_dropped + s.events_dropped,
        },
    );
    let mode = match c.mode {
        0 => "off",
        1 => "log",
        2 => "allow",
        _ => "unknown",
    };
    Ok(serde_json::json!({
        "mode": mode, "mark": c.mark, "layout_version": c.layout_version,
        "stats": {"mirror_hits": totals.mirror_hits, "missing_hits": totals.missing_hits,
                  "vip_other_port": totals.vip_other_port, "events_dropped": totals.events_dropped},
        "services": rows,
        "egress_restricted_sources": restricted_sources(pins)?,
    }))
}

/// Adds `service: "namespace/name"` to each member the agent's virtual
/// services hold.
pub fn name_services(dump: &mut serde_json::Value, state: &serde_json::Value) {
    let names: BTreeMap<String, &str> = state["virtual_services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let member = format!(
                "{},{}:{}",
                v["address"].as_str()?,
                v["protocol"].as_str()?,
                v["port"]
            );
            Some((member, v["service"].as_str()?))
        })
        .collect();
    for row in dump["services"].as_array_mut().into_iter().flatten() {
        if let Some(name) = row["member"].as_str().and_then(|m| names.get(m)) {
            row["service"] = (*name).into();
        }
    }
}

fn print(dump: &serde_json::Value) {
    let stats = &dump["stats"];
    println!(
        "mode {}, mark {:#x}, layout {}",
        dump["mode"].as_str().unwrap_or_default(),
        dump["mark"].as_u64().unwrap_or(0),
        dump["layout_version"]
    );
    println!(
        "mirror hits {}, to members missing from the kernel {}, to other ports of a VIP {}, events dropped {}",
        stats["mirror_hits"], stats["missing_hits"], stats["vip_other_port"], stats["events_dropped"]
    );
    println!(
        "{:<44} {:<24} {:>12} {:>14}  flags",
        "member", "service", "packets", "bytes"
    );
    for r in dump["services"].as_array().into_iter().flatten() {
        let service = match r["service"].as_str() {
            Some(name) => name.to_string(),
            None => format!("{:08x}", r["service_id"].as_u64().unwrap_or(0)),
        };
        println!(
            "{:<44} {:<24} {:>12} {:>14}  {}",
            r["member"].as_str().unwrap_or_default(),
            service,
            r["packets"].as_u64().unwrap_or(0),
            r["bytes"].as_u64().unwrap_or(0),
            flags_text(r)
        );
    }
    let sources = dump["egress_restricted_sources"].as_array();
    println!(
        "egress-restricted sources (never marked): {}",
        sources.map_or(0, Vec::len)
    );
    for s in sources.into_iter().flatten() {
        println!("  {}", s.as_str().unwrap_or_default());
    }
}

fn flags_text(r: &serde_json::Value) -> String {
    let mut flags = Vec::new();
    if r["missing_from_kernel"] == true {
        flags.push("missing-from-kernel");
    }
    if r["chain_decides"] == true {
        flags.push("chain-decides");
    }
    flags.join(",")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn members_get_their_service_name_from_the_agent() {
        let mut dump = json!({"services": [
            {"member": "203.0.113.10,tcp:80", "service_id": 0xaf9edad9u32},
            {"member": "10.0.1.1,udp:53", "service_id": 1},
        ]});
        let state = json!({"virtual_services": [
            {"address": "203.0.113.10", "protocol": "tcp", "port": 80, "service": "shop/web"},
            {"address": "203.0.113.10", "protocol": "udp", "port": 80, "service": "shop/dns"},
        ]});
        super::name_services(&mut dump, &state);
        assert_eq!(dump["services"][0]["service"], "shop/web");
        assert!(dump["services"][1]["service"].is_null(), "{dump}");
    }
}
