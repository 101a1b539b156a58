//! A cheap read of the whole IPVS table for a periodic full sync.
//!
//! Netlink has no dump of every destination: `IPVS_CMD_GET_DEST` needs a
//! service, so [`IpvsClient::list`] costs one dump per service (10k round
//! trips at 10k Services). `/proc/net/ip_vs` (`ip_vs_info_seq_show` in
//! `net/netfilter/ipvs/ip_vs_ctl.c`, per network namespace) prints every
//! service and destination in one read. It shows, per IPv4 service: the
//! protocol, address, port, scheduler, the one-packet flag, persistence
//! with its timeout and netmask; per destination: address, port, forward
//! method and weight. It does not show the scheduler flags (`flag-1..3`),
//! an IPv6 service's one-packet flag or netmask in a form we can compare,
//! the thresholds, tunnel settings or a persistence engine.
//!
//! So [`read_for_plan`] takes the services from `/proc` and reads by
//! netlink only the desired services that use what `/proc` does not show
//! ([`proc_shows`]). What the cheap read misses: a scheduler flag or a
//! threshold somebody else set on a service of ours that wants none, and a
//! service the listing skipped (see [`read_for_plan`]) that we do not
//! want. The full netlink read ([`IpvsClient::list`]) on a schedule
//! catches those.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{
    Destination, DestinationEntry, ForwardMethod, IpvsClient, IpvsError, Netmask, Scheduler,
    Service, ServiceEntry, ServiceFlagBits, ServiceKey, Stats, VirtualServer,
};
use crate::desired::Protocol;

/// The IPVS table of the calling thread's network namespace.
const PROC_IP_VS: &str = "/proc/thread-self/net/ip_vs";

/// A line of `/proc/net/ip_vs` we cannot read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {PROC_IP_VS}: {0}")]
    Read(#[from] std::io::Error),
    #[error("{PROC_IP_VS} line {line}: {reason}: {text:?}")]
    Line {
        line: usize,
        reason: &'static str,
        text: String,
    },
}

/// Whether `/proc/net/ip_vs` shows everything of `service` and `dests`
/// that a plan compares.
pub fn proc_shows(service: &Service, dests: &[Destination]) -> bool {
    let unseen = ServiceFlagBits::SCHED1
        | ServiceFlagBits::SCHED2
        | ServiceFlagBits::SCHED3
        | ServiceFlagBits::PERSISTENT;
    matches!(
        service.key,
        ServiceKey::Addr {
            addr: IpAddr::V4(_),
            ..
        }
    ) && service.flags.bits() & unseen.bits() == 0
        && dests
            .iter()
            .all(|d| d.upper_threshold == 0 && d.lower_threshold == 0)
}

/// The table as a full sync's plan needs it: every service from one read
/// of `/proc/net/ip_vs`, and those of `desired` that it cannot show
/// entirely from netlink (replacing the `/proc` entry, or added when
/// netlink finds one). Falls back to [`IpvsClient::list`] when `/proc`
/// cannot be read.
pub fn read_for_plan(
    client: &mut IpvsClient,
    desired: &[(Service, Vec<Destination>)],
) -> Result<Vec<VirtualServer>, IpvsError> {
    let mut table = match read_proc() {
        Ok(table) => table,
        Err(e) => {
            tracing::warn!("{e}; reading IPVS by netlink, one request per service");
            return client.list();
        }
    };
    // A desired service `/proc` did not list is confirmed by netlink: the
    // kernel's listing can skip services when it is read in more than one
    // page and another namespace has IPVS services (its restart position
    // counts every namespace's services, its seek only this one's).
    let listed: BTreeSet<ServiceKey> = table.iter().map(|v| v.entry.service.key).collect();
    let deep: BTreeSet<ServiceKey> = desired
        .iter()
        .filter(|(s, d)| !proc_shows(s, d) || !listed.contains(&s.key))
        .map(|(s, _)| s.key)
        .collect();
    if deep.is_empty() {
        return Ok(table);
    }
    table.retain(|v| !deep.contains(&v.entry.service.key));
    for key in &deep {
        let entry = match client.service(key) {
            Ok(e) => e,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let destinations = client.destinations(key)?;
        table.push(VirtualServer {
            entry,
            destinations,
        });
    }
    Ok(table)
}

/// Every service of the calling thread's namespace, from `/proc`.
pub fn read_proc() -> Result<Vec<VirtualServer>, ProcError> {
    parse_proc(&std::fs::read_to_string(PROC_IP_VS)?)
}

/// Parses `ip_vs_info_seq_show`'s text. Firewall-mark services (never
/// ours) and services of other protocols are skipped with their
/// destinations; fields `/proc` does not print are left at their defaults
/// (a persistent service's timeout is the kernel's, in jiffies).
pub fn parse_proc(text: &str) -> Result<Vec<VirtualServer>, ProcError> {
    let mut out: Vec<VirtualServer> = Vec::new();
    // Whether the destinations that follow belong to a kept service.
    let mut keep = false;
    for (i, line) in text.lines().enumerate().skip(3) {
        let bad = |reason| ProcError::Line {
            line: i + 1,
            reason,
            text: line.to_string(),
        };
        if let Some(dest) = line.strip_prefix("  -> ") {
            if keep {
                let entry = parse_destination(dest).ok_or_else(|| bad("bad destination"))?;
                let last = out.last_mut().ok_or_else(|| bad("destination first"))?;
                last.destinations.push(entry);
            }
            continue;
        }
        keep = false;
        let mut words = line.split_whitespace();
        let Some(protocol) = words.next().and_then(protocol_of) else {
            continue;
        };
        let service = parse_service(protocol, words).ok_or_else(|| bad("bad service"))?;
        out.push(VirtualServer {
            entry: ServiceEntry {
                service,
                pe_name: None,
                stats: Stats::default(),
            },
            destinations: Vec::new(),
        });
        keep = true;
    }
    for v in &mut out {
        v.destinations.sort_by_key(|d| d.destination.key());
    }
    Ok(out)
}

fn protocol_of(word: &str) -> Option<Protocol> {
    match word {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// `0A60000A:0050 rr [ops] [persistent 600 FFFFFF00]` (IPv6: `[fd00::1]:0050`).
fn parse_service<'a>(
    protocol: Protocol,
    mut words: impl Iterator<Item = &'a str>,
) -> Option<Service> {
    let (addr, port) = parse_sockaddr(words.next()?)?;
    let key = ServiceKey::Addr {
        protocol,
        addr,
        port,
    };
    let mut service = Service::new(key, Scheduler::new(words.next()?).ok()?);
    // The kernel's own bookkeeping bit, as netlink reports it.
    service.flags = ServiceFlagBits::HASHED;
    while let Some(word) = words.next() {
        match word {
            "ops" => service.flags |= ServiceFlagBits::ONE_PACKET,
            "persistent" => {
                let jiffies = words.next()?.parse().ok()?;
                let mask = u32::from_str_radix(words.next()?, 16).ok()?;
                service.flags |= ServiceFlagBits::PERSISTENT;
                service.timeout = jiffies;
                if addr.is_ipv4() {
                    service.netmask = Netmask::V4(Ipv4Addr::from(mask));
                }
            }
            _ => return None,
        }
    }
    Some(service)
}

/// `0AF40105:1F90      Masq    1      0          0`.
fn parse_destination(text: &str) -> Option<DestinationEntry> {
    let mut words = text.split_whitespace();
    let (addr, port) = parse_sockaddr(words.next()?)?;
    let forward = match words.next()? {
        "Masq" => ForwardMethod::Masq,
        "Local" => ForwardMethod::Local,
        "Tunnel" => ForwardMethod::Tunnel,
        "Route" => ForwardMethod::Route,
        _ => return None,
    };
    let weight = words.next()?.parse::<i64>().ok()?;
    let active_conns = words.next()?.parse::<i64>().ok()?;
    let inactive_conns = words.next()?.parse::<i64>().ok()?;
    Some(DestinationEntry {
        destination: Destination::new(addr, port)
            .forward(forward)
            .weight(weight as u32),
        active_conns: active_conns as u32,
        inactive_conns: inactive_conns as u32,
        persistent_conns: 0,
        stats: Stats::default(),
    })
}

/// `0A60000A:0050` (IPv4 in hex, host order) or `[fd00::1]:0050`.
fn parse_sockaddr(word: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = word.rsplit_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let addr = match addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        Some(v6) => IpAddr::V6(v6.parse::<Ipv6Addr>().ok()?),
        None if addr.len() == 8 => IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(addr, 16).ok()?)),
        None => return None,
    };
    Some((addr, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Family;

    /// As a 6.1 kernel prints it (ipvsadm's variety: persistent, ops,
    /// IPv6, a firewall mark).
    const TEXT: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A000001:0050 rr 
  -> 0A010002:1F90      Masq    5      0          0         
  -> 0A010001:1F90      Masq    1      3          1         
UDP  0A000002:0035 wrr persistent 75000 FFFFFF00
  -> 0A010004:0035      Route   2      0          0         
  -> 0A010005:0035      Tunnel  3      0          0         
UDP  0A000004:12B5 rr ops 
TCP  [fd00:0000:0000:0000:0000:0000:0000:0001]:01BB sh 
  -> [fd00:0001:0000:0000:0000:0000:0000:0001]:20FB      Masq    1      0          0         
UDP  [fd00:0000:0000:0000:0000:0000:0000:0002]:14E9 mh persistent 150000 40000000
FWM  00000005 rr persistent 1800 FFFFFFFF
  -> 0A010007:0000      Route   1      0          0         
ESP  0A000009:0000 rr 
  -> 0A010009:0000      Masq    1      0          0         
";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reads_services_and_destinations_and_skips_marks() {
        let table = parse_proc(TEXT).unwrap();
        let keys: Vec<String> = table
            .iter()
            .map(|v| v.entry.service.key.to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "TCP 10.0.0.1:80",
                "UDP 10.0.0.2:53",
                "UDP 10.0.0.4:4789",
                "TCP [fd00::1]:443",
                "UDP [fd00::2]:5353"
            ]
        );
        let web = &table[0];
        assert_eq!(web.entry.service.scheduler.as_str(), "rr");
        let dests: Vec<Destination> = web.destinations.iter().map(|d| d.destination).collect();
        assert_eq!(
            dests,
            [
                Destination::new(ip("10.1.0.1"), 8080),
                Destination::new(ip("10.1.0.2"), 8080).weight(5)
            ]
        );
        assert_eq!(web.destinations[0].active_conns, 3);
        // The timeout in jiffies (300 s at HZ 250): compared by netlink.
        let dns = &table[1].entry.service;
        let want = Service::new(
            ServiceKey::udp(ip("10.0.0.2"), 53),
            Scheduler::weighted_round_robin(),
        )
        .persistent(75000, Netmask::prefix(Family::V4, 24).unwrap());
        assert!(dns.same_config(&want), "{dns:?}");
        assert_eq!(table[3].destinations[0].destination.addr, ip("fd00:1::1"));
        assert_eq!(
            table[1].destinations[1].destination.forward,
            ForwardMethod::Tunnel
        );
        assert!(table[2]
            .entry
            .service
            .flags
            .contains(ServiceFlagBits::ONE_PACKET));
    }

    #[test]
    fn a_line_it_cannot_read_is_an_error_naming_the_line() {
        let text = format!("{TEXT}TCP  0A0000:0050 rr \n");
        let err = parse_proc(&text).unwrap_err().to_string();
        assert!(
            err.contains("line 18") && err.contains("bad service"),
            "{err}"
        );
    }

    #[test]
    fn what_proc_does_not_show_is_read_by_netlink() {
        let plain = Service::new(
            ServiceKey::tcp(ip("10.0.0.1"), 80),
            Scheduler::round_robin(),
        );
        assert!(proc_shows(&plain, &[Destination::new(ip("10.1.0.1"), 80)]));
        let flagged = plain.clone().with_flags(ServiceFlagBits::SCHED1);
        assert!(!proc_shows(&flagged, &[]));
        let limited = Destination::new(ip("10.1.0.1"), 80).thresholds(10, 1);
        assert!(!proc_shows(&plain, &[limited]));
        let v6 = Service::new(ServiceKey::tcp(ip("fd00::1"), 80), Scheduler::round_robin());
        assert!(!proc_shows(&v6, &[]));
        let sticky = plain.persistent(600, Netmask::host(Family::V4));
        assert!(!proc_shows(&sticky, &[]));
    }
}
