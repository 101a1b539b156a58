//! A cheap read of the whole IPVS table for a periodic full sync.
//!
//! Netlink has no dump of every destination: `IPVS_CMD_GET_DEST` needs a
//! service, so [`IpvsClient::list`] costs one dump per service (10k round
//! trips at 10k Services). Two cheaper reads show the IPv4 table whole:
//!
//! - the old getsockopt interface ([`sockopt`]): every field of an IPv4
//!   service and its IPv4 destinations a plan compares; nothing of an IPv6
//!   service. The first choice ([`Listing::read`]).
//! - `/proc/net/ip_vs` (`ip_vs_info_seq_show` in
//!   `net/netfilter/ipvs/ip_vs_ctl.c`, per network namespace): per IPv4
//!   service the protocol, address, port, scheduler, the one-packet flag,
//!   persistence with its timeout (in jiffies) and netmask; per
//!   destination address, port, forward method and weight. Not the
//!   scheduler flags (`flag-1..3`), an IPv6 service's one-packet flag or
//!   netmask in a form we can compare, the thresholds. The kernel prints
//!   it again from the start for every `read()`: quadratic at 10k. The
//!   fallback where getsockopt is missing or keeps failing.
//!
//! [`read_for_plan`] takes the services from one of them and reads by
//! netlink only the desired services it does not show entirely
//! ([`Listing::shows`]), and, after getsockopt where IPv6 services may be
//! ours, the IPv6 services a netlink dump lists (getsockopt neither shows
//! nor counts them). What the cheap read misses: a
//! threshold or tunnel setting somebody else set on a service of ours
//! that wants none (with `/proc`, a scheduler flag too), and with `/proc`
//! a service the listing skipped (see [`read_for_plan`]) that we do not
//! want. The full netlink read ([`IpvsClient::list`]) on a schedule
//! catches those.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{
    sockopt::{self, SockoptError},
    sync, Destination, DestinationEntry, ForwardMethod, IpvsClient, IpvsError, Netmask, Scheduler,
    Service, ServiceConfig, ServiceEntry, ServiceFlagBits, ServiceKey, Stats, VirtualServer,
};
use crate::desired::{Family, Protocol, VirtualService};

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

/// The service flags `/proc/net/ip_vs` does not show in a form a plan
/// can compare.
const UNSEEN_FLAGS: ServiceFlagBits = ServiceFlagBits::SCHED1
    .union(ServiceFlagBits::SCHED2)
    .union(ServiceFlagBits::SCHED3)
    .union(ServiceFlagBits::PERSISTENT);

/// Whether `/proc/net/ip_vs` shows everything of `service` and `dests`
/// that a plan compares.
pub fn proc_shows(service: &Service, dests: &[Destination]) -> bool {
    matches!(
        service.key,
        ServiceKey::Addr {
            addr: IpAddr::V4(_),
            ..
        }
    ) && service.flags.bits() & UNSEEN_FLAGS.bits() == 0
        && dests
            .iter()
            .all(|d| d.upper_threshold == 0 && d.lower_threshold == 0)
}

/// [`proc_shows`] of a desired virtual service's kernel form, without
/// making it (a desired destination has no thresholds).
pub fn proc_shows_desired(vs: &VirtualService) -> bool {
    vs.key.addr.is_ipv4() && ServiceFlagBits::from(vs.flags).bits() & UNSEEN_FLAGS.bits() == 0
}

/// A desired service as a full read asks about it: a kernel form, or a
/// valid desired virtual service whose form a plan makes later.
pub trait Wanted {
    fn kernel_key(&self) -> ServiceKey;
    /// [`proc_shows`] of its kernel form.
    fn proc_shows(&self) -> bool;
}

impl Wanted for (Service, Vec<Destination>) {
    fn kernel_key(&self) -> ServiceKey {
        self.0.key
    }
    fn proc_shows(&self) -> bool {
        proc_shows(&self.0, &self.1)
    }
}

impl Wanted for &VirtualService {
    fn kernel_key(&self) -> ServiceKey {
        sync::kernel_key(&self.key)
    }
    fn proc_shows(&self) -> bool {
        proc_shows_desired(self)
    }
}

/// One cheap read of the whole table.
#[derive(Debug)]
pub enum Listing {
    /// Through getsockopt: every IPv4 service; and when IPv6 services may
    /// be ours, the keys of the IPv6 ones by a netlink dump of the
    /// services (without destinations).
    Sockopt {
        table: sockopt::Table,
        ipv6: Option<Vec<ServiceKey>>,
    },
    /// `/proc/net/ip_vs`'s text.
    Proc(String),
}

impl Listing {
    /// Through getsockopt, else `/proc` (a warning says why, unless the
    /// kernel has no such interface). `ipv6`: IPv6 services may be ours
    /// (a desired one, an IPv6 VIP or node address), so the IPv6 services
    /// getsockopt cannot show are listed by netlink.
    pub fn read(client: &mut IpvsClient, ipv6: bool) -> Result<Self, ListingError> {
        let table = match sockopt::read() {
            Ok(table) => table,
            Err(e) => {
                log_fallback(&e);
                return Ok(Self::Proc(read_text()?));
            }
        };
        let ipv6 = ipv6_keys(client, ipv6)?;
        Ok(Self::Sockopt { table, ipv6 })
    }

    /// Whether it shows everything of `service` and `dests` that a plan
    /// compares (a service of a shown family it does not list is absent).
    pub fn shows(&self, service: &Service, dests: &[Destination]) -> bool {
        match self {
            Self::Sockopt { table, .. } => sockopt_shows(table, &service.key),
            Self::Proc(_) => proc_shows(service, dests),
        }
    }

    /// [`Listing::shows`] of a desired virtual service's kernel form,
    /// without making it.
    pub fn shows_desired(&self, vs: &VirtualService) -> bool {
        match self {
            Self::Sockopt { table, .. } => sockopt_shows_desired(&table.summary, vs),
            Self::Proc(_) => proc_shows_desired(vs),
        }
    }
}

/// What [`Listing::read`] through getsockopt would tell a full sync that
/// expects the table it last found equal, without decoding a service:
/// the IPv4 table's summary, and the IPv6 keys as it lists them.
#[derive(Debug)]
pub struct Glance {
    pub summary: sockopt::Summary,
    pub ipv6: Option<Vec<ServiceKey>>,
}

impl Glance {
    /// None when getsockopt gives no table: [`Listing::read`] says why.
    pub fn read(client: &mut IpvsClient, ipv6: bool) -> Result<Option<Self>, IpvsError> {
        let Ok(summary) = sockopt::summary() else {
            return Ok(None);
        };
        let ipv6 = ipv6_keys(client, ipv6)?;
        Ok(Some(Self { summary, ipv6 }))
    }

    /// [`Listing::shows_desired`], as the listing would answer.
    pub fn shows_desired(&self, vs: &VirtualService) -> bool {
        sockopt_shows_desired(&self.summary, vs)
    }
}

/// The IPv6 services' keys by a netlink dump, when they may be ours.
fn ipv6_keys(client: &mut IpvsClient, ipv6: bool) -> Result<Option<Vec<ServiceKey>>, IpvsError> {
    if !ipv6 {
        return Ok(None);
    }
    let keys = client.services()?.into_iter().map(|e| e.service.key);
    Ok(Some(keys.filter(is_ipv6_address).collect()))
}

/// Whether getsockopt shows a desired service whole.
fn sockopt_shows_desired(summary: &sockopt::Summary, vs: &VirtualService) -> bool {
    vs.key.addr.is_ipv4()
        && !summary.partial.contains(&ServiceKey::Addr {
            protocol: vs.key.proto,
            addr: vs.key.addr,
            port: vs.key.port,
        })
}

/// Why neither cheap read gave a listing.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error("listing the IPv6 services: {0}")]
    Netlink(#[from] IpvsError),
}

fn is_ipv6_address(key: &ServiceKey) -> bool {
    matches!(
        key,
        ServiceKey::Addr {
            addr: IpAddr::V6(_),
            ..
        }
    )
}

fn log_fallback(e: &SockoptError) {
    if e.unsupported() {
        tracing::debug!("{e}; reading /proc/net/ip_vs");
    } else {
        tracing::warn!("{e}; reading /proc/net/ip_vs");
    }
}

/// Whether getsockopt's `table` shows the service at `key` whole.
fn sockopt_shows(table: &sockopt::Table, key: &ServiceKey) -> bool {
    matches!(
        key,
        ServiceKey::Addr {
            addr: IpAddr::V4(_),
            ..
        }
    ) && !table.summary.partial.contains(key)
}

/// The table as a full sync's plan needs it: every service from one cheap
/// read ([`Listing::read`]), and by netlink those of `desired` that it
/// cannot show entirely (replacing its entry, or added when netlink finds
/// one). Falls back to [`IpvsClient::list`] when neither cheap read works.
pub fn read_for_plan(
    client: &mut IpvsClient,
    desired: &[impl Wanted],
) -> Result<Vec<ServiceConfig>, IpvsError> {
    let ipv6 = desired
        .iter()
        .any(|d| d.kernel_key().family() == Family::V6);
    match Listing::read(client, ipv6) {
        Ok(listing) => table_for_plan(client, desired, listing),
        Err(e) => {
            tracing::warn!("{e}; reading IPVS by netlink, one request per service");
            client.list_configs()
        }
    }
}

/// [`read_for_plan`] from `listing`, just read.
pub fn table_for_plan(
    client: &mut IpvsClient,
    desired: &[impl Wanted],
    listing: Listing,
) -> Result<Vec<ServiceConfig>, IpvsError> {
    match listing {
        Listing::Sockopt { table, ipv6 } => from_sockopt(client, desired, table, ipv6),
        Listing::Proc(text) => from_proc_text(client, desired, &text),
    }
}

/// getsockopt's IPv4 table, the desired services it does not show whole
/// by netlink, and the other IPv6 services `ipv6` lists (strays a plan
/// may delete) by netlink too.
fn from_sockopt(
    client: &mut IpvsClient,
    desired: &[impl Wanted],
    read: sockopt::Table,
    ipv6: Option<Vec<ServiceKey>>,
) -> Result<Vec<ServiceConfig>, IpvsError> {
    let mut deep: BTreeSet<ServiceKey> = desired
        .iter()
        .map(Wanted::kernel_key)
        .filter(|key| !sockopt_shows(&read, key))
        .collect();
    deep.extend(ipv6.into_iter().flatten());
    let mut table = read.services;
    table.retain(|v| !deep.contains(&v.service.key));
    table.extend(read_by_netlink(client, deep.iter())?);
    Ok(table)
}

/// The `/proc` text's table, the desired services it does not show whole
/// by netlink; falls back to [`IpvsClient::list`] when it cannot be
/// parsed.
fn from_proc_text(
    client: &mut IpvsClient,
    desired: &[impl Wanted],
    text: &str,
) -> Result<Vec<ServiceConfig>, IpvsError> {
    let mut table: Vec<ServiceConfig> = match parse_proc(text) {
        Ok(table) => table.into_iter().map(ServiceConfig::from).collect(),
        Err(e) => {
            tracing::warn!("{e}; reading IPVS by netlink, one request per service");
            return client.list_configs();
        }
    };
    // A desired service `/proc` did not list is confirmed by netlink: the
    // kernel's listing can skip services when it is read in more than one
    // page and another namespace has IPVS services (its restart position
    // counts every namespace's services, its seek only this one's).
    let listed: BTreeSet<ServiceKey> = table.iter().map(|v| v.service.key).collect();
    let deep: BTreeSet<ServiceKey> = desired
        .iter()
        .filter(|d| !d.proc_shows() || !listed.contains(&d.kernel_key()))
        .map(Wanted::kernel_key)
        .collect();
    if deep.is_empty() {
        return Ok(table);
    }
    table.retain(|v| !deep.contains(&v.service.key));
    table.extend(read_by_netlink(client, deep.iter())?);
    Ok(table)
}

/// The services at `keys` with their destinations, by netlink (a key with
/// no service is left out).
pub fn read_by_netlink<'a>(
    client: &mut IpvsClient,
    keys: impl IntoIterator<Item = &'a ServiceKey>,
) -> Result<Vec<ServiceConfig>, IpvsError> {
    let mut out = Vec::new();
    for key in keys {
        out.extend(client.config(key)?);
    }
    Ok(out)
}

/// Every service of the calling thread's namespace, from `/proc`.
pub fn read_proc() -> Result<Vec<VirtualServer>, ProcError> {
    parse_proc(&read_text()?)
}

/// The text of `/proc/net/ip_vs` of the calling thread's namespace.
pub fn read_text() -> Result<String, ProcError> {
    Ok(std::fs::read_to_string(PROC_IP_VS)?)
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
