//! `ipwarden kernel ipvs [--json]`: the IPVS table of the current network
//! namespace, read over netlink. The table reads like `ipvsadm -Ln`; the
//! JSON is for scripts and tests.

use std::fmt::Write as _;

use anyhow::Context;
use serde::Serialize;

use crate::{
    desired::Family,
    kernel::ipvs::{
        protocol_name, DestinationEntry, Info, IpvsClient, ServiceFlagBits, ServiceKey, SockAddr,
        VirtualServer,
    },
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON for scripts instead of the human table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut ipvs = IpvsClient::connect()?;
    let table = ipvs.list().context("reading the IPVS table")?;
    if args.json {
        let services: Vec<JsonService> = table.iter().map(JsonService::from).collect();
        println!("{}", serde_json::to_string_pretty(&services)?);
    } else {
        let info = ipvs.info().context("reading IPVS info")?;
        print!("{}", render(&info, &table));
    }
    Ok(())
}

/// The `ipvsadm -Ln` layout, column for column.
pub fn render(info: &Info, table: &[VirtualServer]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "IP Virtual Server version {} (size={})",
        info.version_string(),
        info.conn_tab_size
    );
    out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
    out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
    for vs in table {
        let svc = &vs.entry.service;
        // ipvsadm pads the protocol to four columns: "TCP  ", "SCTP ".
        let name = match svc.key {
            ServiceKey::Addr {
                protocol,
                addr,
                port,
            } => format!("{:<4} {}", protocol_name(protocol), SockAddr(addr, port)),
            ServiceKey::Fwmark { family, mark } => match family {
                Family::V4 => format!("FWM  {mark}"),
                Family::V6 => format!("FWM  {mark} IPv6"),
            },
        };
        let _ = write!(out, "{name} {}", svc.scheduler);
        let sched_flags = sched_flag_names(svc.scheduler.as_str(), svc.flags);
        if !sched_flags.is_empty() {
            let _ = write!(out, " ({})", sched_flags.join(","));
        }
        if svc.flags.contains(ServiceFlagBits::PERSISTENT) {
            let _ = write!(out, " persistent {}", svc.timeout);
            if svc.netmask != crate::kernel::ipvs::Netmask::host(svc.key.family()) {
                let _ = write!(out, " mask {}", svc.netmask);
            }
            if let Some(pe) = &vs.entry.pe_name {
                let _ = write!(out, " pe {pe}");
            }
        }
        if svc.flags.contains(ServiceFlagBits::ONE_PACKET) {
            out.push_str(" ops");
        }
        out.push('\n');
        for d in &vs.destinations {
            let dest = &d.destination;
            let _ = writeln!(
                out,
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                dest.key().to_string(),
                dest.forward.ipvsadm_name(),
                dest.weight,
                d.active_conns,
                d.inactive_conns
            );
        }
    }
    out
}

/// ipvsadm names the scheduler flags after what sh and mh do with them.
fn sched_flag_names(scheduler: &str, flags: ServiceFlagBits) -> Vec<&'static str> {
    let names: [&str; 3] = match scheduler {
        "sh" => ["sh-fallback", "sh-port", "flag-3"],
        "mh" => ["mh-fallback", "mh-port", "flag-3"],
        _ => ["flag-1", "flag-2", "flag-3"],
    };
    [
        ServiceFlagBits::SCHED1,
        ServiceFlagBits::SCHED2,
        ServiceFlagBits::SCHED3,
    ]
    .iter()
    .zip(names)
    .filter(|(bit, _)| flags.contains(**bit))
    .map(|(_, name)| name)
    .collect()
}

#[derive(Serialize)]
struct JsonService {
    family: &'static str,
    protocol: Option<&'static str>,
    address: Option<String>,
    port: Option<u16>,
    fwmark: Option<u32>,
    scheduler: String,
    flags: Vec<String>,
    timeout: u32,
    netmask: String,
    destinations: Vec<JsonDestination>,
}

#[derive(Serialize)]
struct JsonDestination {
    address: String,
    port: u16,
    weight: u32,
    forward: &'static str,
    upper_threshold: u32,
    lower_threshold: u32,
    active_conns: u32,
    inactive_conns: u32,
}

impl From<&VirtualServer> for JsonService {
    fn from(vs: &VirtualServer) -> Self {
        let svc = &vs.entry.service;
        let (protocol, address, port, fwmark) = match svc.key {
            ServiceKey::Addr {
                protocol,
                addr,
                port,
            } => (
                Some(protocol_name(protocol)),
                Some(addr.to_string()),
                Some(port),
                None,
            ),
            ServiceKey::Fwmark { mark, .. } => (None, None, None, Some(mark)),
        };
        JsonService {
            family: match svc.key.family() {
                Family::V4 => "inet",
                Family::V6 => "inet6",
            },
            protocol,
            address,
            port,
            fwmark,
            scheduler: svc.scheduler.to_string(),
            flags: svc.flags.names(),
            timeout: svc.timeout,
            netmask: svc.netmask.to_string(),
            destinations: vs.destinations.iter().map(JsonDestination::from).collect(),
        }
    }
}

impl From<&DestinationEntry> for JsonDestination {
    fn from(d: &DestinationEntry) -> Self {
        let dest = &d.destination;
        JsonDestination {
            address: dest.addr.to_string(),
            port: dest.port,
            weight: dest.weight,
            forward: dest.forward.name(),
            upper_threshold: dest.upper_threshold,
            lower_threshold: dest.lower_threshold,
            active_conns: d.active_conns,
            inactive_conns: d.inactive_conns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::ipvs::{
        Destination, ForwardMethod, Netmask, Scheduler, Service, ServiceEntry,
    };

    fn table() -> Vec<VirtualServer> {
        let key = ServiceKey::tcp("10.0.0.1".parse().unwrap(), 80);
        let svc = Service::new(key, Scheduler::source_hashing())
            .persistent(300, Netmask::prefix(Family::V4, 24).unwrap())
            .with_flags(ServiceFlagBits::HASHED | ServiceFlagBits::SCHED1);
        vec![
            VirtualServer {
                entry: ServiceEntry {
                    service: svc,
                    pe_name: None,
                },
                destinations: vec![DestinationEntry {
                    destination: Destination::new("10.1.0.1".parse().unwrap(), 8080)
                        .forward(ForwardMethod::Route)
                        .weight(3),
                    active_conns: 0,
                    inactive_conns: 2,
                }],
            },
            VirtualServer {
                entry: ServiceEntry {
                    service: Service::new(
                        ServiceKey::fwmark(Family::V6, 7),
                        Scheduler::round_robin(),
                    ),
                    pe_name: None,
                },
                destinations: vec![],
            },
        ]
    }

    #[test]
    fn renders_like_ipvsadm() {
        let info = Info {
            version: 0x010201,
            conn_tab_size: 4096,
        };
        assert_eq!(
            render(&info, &table()),
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port Scheduler Flags\n  \
             -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             TCP  10.0.0.1:80 sh (sh-fallback) persistent 300 mask 255.255.255.0\n  \
             -> 10.1.0.1:8080                Route   3      0          2         \n\
             FWM  7 IPv6 rr\n"
        );
    }

    #[test]
    fn json_shape() {
        let json: Vec<JsonService> = table().iter().map(JsonService::from).collect();
        let v = serde_json::to_value(&json).unwrap();
        assert_eq!(v[0]["protocol"], "TCP");
        assert_eq!(v[0]["address"], "10.0.0.1");
        assert_eq!(v[0]["port"], 80);
        assert!(v[0]["fwmark"].is_null());
        assert_eq!(
            v[0]["flags"],
            serde_json::json!(["persistent", "hashed", "flag-1"])
        );
        assert_eq!(v[0]["timeout"], 300);
        assert_eq!(v[0]["destinations"][0]["forward"], "route");
        assert_eq!(v[0]["destinations"][0]["weight"], 3);
        assert!(v[1]["protocol"].is_null());
        assert_eq!(v[1]["fwmark"], 7);
        assert_eq!(v[1]["family"], "inet6");
    }
}
