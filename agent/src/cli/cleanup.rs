//! `ipwarden cleanup`: removes everything ipwarden created in this network
//! namespace and bpffs: pinned links and maps, clsact filters, our chains
//! and the rules that jump to them, our sets, our IPVS services, the VIPs
//! and `ipwarden0`. Nothing of other programs is touched. IPVS services the
//! agent recorded in `ipwarden-svip-prt` go too, wherever they are
//! (`cleanup_ipvs.rs`); any of its services still there after it makes it
//! exit non-zero, naming them.

use std::{collections::BTreeSet, path::PathBuf};

use anyhow::{Context, Result};
use ipwarden_common::names;

use super::cleanup_ipvs;
use crate::{
    bpf::{self, PinLayout},
    controllers::services::names::DUMMY_INTERFACE,
    desired::{Family, Ownership, Table, TablePlan},
    kernel::{
        ipset::{IpsetClient, SetName},
        iptables,
        ipvs::IpvsClient,
        ipvs_sync::{self, IpvsScope},
        link::LinkClient,
    },
    store::owners::has_our_prefix,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// bpffs directory of the pins to remove.
    #[arg(long, env = "IPWARDEN_BPF_PIN_DIR", default_value = names::DEFAULT_PIN_DIR)]
    pub bpf_pin_dir: PathBuf,
    /// The NodePort range the agent ran with (its IPVS services there, on
    /// node addresses, are removed).
    #[arg(long, default_value = "30000-32767", value_parser = super::flags::parse_range)]
    pub node_port_range: (u16, u16),
}

pub fn run(args: &Args) -> Result<()> {
    let link = LinkClient::connect()?;

    // eBPF first: unpinning a TCX link detaches it; clsact filters go by
    // their two priorities.
    let pins = PinLayout::new(&args.bpf_pin_dir);
    for (_, iface) in link.links()? {
        bpf::detach_clsact(&iface);
    }
    pins.remove_all()
        .with_context(|| format!("removing {}", pins.root().display()))?;
    println!(
        "removed pins under {} and ipwarden's clsact filters",
        pins.root().display()
    );

    // IPVS services on our VIPs and NodePorts, while ipwarden0 still
    // tells which addresses are ours and ipwarden-svip-prt which frontends
    // the agent programmed.
    let mut ipset = IpsetClient::new()?;
    let recorded = cleanup_ipvs::recorded_frontends(&mut ipset)?;
    let mut left = Vec::new();
    match IpvsClient::connect() {
        Ok(mut ipvs) => {
            let index = link.index_of(DUMMY_INTERFACE)?;
            let addrs = link.addresses()?;
            let ownership = IpvsScope {
                vips: link.vips(DUMMY_INTERFACE)?,
                node_ips: addrs
                    .iter()
                    .filter(|(i, _, _)| Some(*i) != index)
                    .map(|(_, a, _)| *a)
                    .collect(),
                node_port_range: args.node_port_range,
            };
            let report = ipvs_sync::sync(&mut ipvs, &[], &ownership).map_err(|errs| {
                anyhow::anyhow!(errs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "))
            })?;
            let more = cleanup_ipvs::remove_recorded(&mut ipvs, &ownership, &recorded)?;
            println!("removed {} IPVS services", report.services_removed + more);
            left = cleanup_ipvs::remaining(&mut ipvs, &ownership, &recorded)?;
        }
        Err(e) => println!("IPVS: nothing to remove ({e})"),
    }

    // Chains and the tagged rules into them, in every table and family.
    for family in Family::ALL {
        for table in [Table::Filter, Table::Nat, Table::Mangle, Table::Raw] {
            let current = iptables::backend::current().backend;
            if !iptables::backend::table_exists(current, family, &table.to_string()) {
                continue; // Absent: nothing of ours, and a read would create it.
            }
            let plan = TablePlan {
                family,
                table,
                owns: vec![
                    Ownership::Prefix("IPWARDEN-".into()),
                    Ownership::Prefix("IPW-".into()),
                ],
                tag: "ipwarden:".into(),
                chains: Vec::new(),
                jumps: Vec::new(),
            };
            let r = iptables::apply(&plan)?;
            if !r.changes.is_empty() {
                println!(
                    "{table} ({family:?}): removed chains {:?}",
                    r.changes.chains_deleted
                );
            }
        }
    }

    // Sets, now that no rule references them.
    let ours: BTreeSet<String> = ipset
        .list_names()?
        .into_iter()
        .filter(|n| has_our_prefix(n))
        .collect();
    for name in &ours {
        ipset.destroy(&SetName::new(name.as_str())?, true)?;
    }
    println!("destroyed {} sets", ours.len());

    if link.delete(DUMMY_INTERFACE)? {
        println!("deleted {DUMMY_INTERFACE} and its VIP routes");
    }
    if !left.is_empty() {
        anyhow::bail!(
            "{} IPVS services of ipwarden remain: {}",
            left.len(),
            left.join(", ")
        );
    }
    Ok(())
}
