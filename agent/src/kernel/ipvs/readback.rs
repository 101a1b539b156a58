//! A cheap read of the whole IPVS table for a periodic full sync.
//!
//! Netlink has no dump of every destination: `IPVS_CMD_GET_DEST` needs a
//! service, so [`IpvsClient::list_configs`] costs one dump per service
//! (10k round trips at 10k Services). The old getsockopt interface
//! ([`sockopt`]) shows every field of an IPv4 service and its IPv4
//! destinations that a plan compares, one call per service, but nothing
//! of an IPv6 service.
//!
//! [`read_for_plan`] takes the IPv4 services from it, and reads by
//! netlink the desired services it does not show whole and, where IPv6
//! services may be ours, the IPv6 services a netlink dump lists
//! (getsockopt neither shows nor counts them). Where getsockopt is
//! missing or the table keeps changing under it, the whole table is read
//! by netlink. What the cheap read misses (a tunnel setting somebody
//! else set on a service of ours that wants none) the full netlink read
//! on a schedule catches.

use std::{
    collections::BTreeSet,
    hash::{DefaultHasher, Hash, Hasher},
    net::IpAddr,
};

use super::{
    sockopt::{self, SockoptError},
    IpvsClient, IpvsError, ServiceConfig, ServiceKey,
};
use crate::desired::Family;

/// One cheap read of the whole table: every IPv4 service through
/// getsockopt, and what a [`Glance`] tells of it.
#[derive(Debug)]
pub struct Listing {
    pub services: Vec<ServiceConfig>,
    pub glance: Glance,
}

impl Listing {
    /// None when getsockopt or the IPv6 dump gives no listing (a log says
    /// why): read the table by netlink. `ipv6`: IPv6 services may be ours
    /// (a desired one, an IPv6 VIP or node address).
    pub fn read(client: &mut IpvsClient, ipv6: bool) -> Option<Self> {
        let table = match sockopt::read() {
            Ok(table) => table,
            Err(e) => {
                log_fallback(&e);
                return None;
            }
        };
        match ipv6_keys(client, ipv6) {
            Ok(ipv6) => Some(Self {
                services: table.services,
                glance: Glance {
                    summary: table.summary,
                    ipv6,
                },
            }),
            Err(e) => {
                tracing::warn!("listing the IPv6 services: {e}; {BY_NETLINK}");
                None
            }
        }
    }
}

/// What [`Listing::read`] tells a full sync that expects the table it
/// last found equal, readable without decoding a service: getsockopt's
/// summary of the IPv4 table; and when IPv6 services may be ours, the
/// keys of the IPv6 ones by a netlink dump of the services (without
/// destinations).
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

    /// Whether the listing shows the service at `key` whole (an IPv4
    /// service it does not list is absent).
    pub fn shows(&self, key: &ServiceKey) -> bool {
        address_of(key).is_some_and(|a| a.is_ipv4()) && !self.summary.partial.contains(key)
    }

    /// What the listing shows a plan, counters left out.
    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.summary.fingerprint.hash(&mut h);
        self.ipv6.hash(&mut h);
        h.finish()
    }
}

/// The IPv6 services' keys by a netlink dump, when they may be ours.
fn ipv6_keys(client: &mut IpvsClient, ipv6: bool) -> Result<Option<Vec<ServiceKey>>, IpvsError> {
    if !ipv6 {
        return Ok(None);
    }
    let keys = client.services()?.into_iter().map(|e| e.service.key);
    Ok(Some(
        keys.filter(|k| address_of(k).is_some_and(|a| a.is_ipv6()))
            .collect(),
    ))
}

/// What a fallback to netlink costs, for its log.
const BY_NETLINK: &str = "reading IPVS by netlink, one request per service";

fn log_fallback(e: &SockoptError) {
    if e.unsupported() {
        tracing::debug!("{e}; {BY_NETLINK}");
    } else {
        tracing::warn!("{e}; {BY_NETLINK}");
    }
}

/// The address of an address service (None: a firewall mark).
fn address_of(key: &ServiceKey) -> Option<IpAddr> {
    match key {
        ServiceKey::Addr { addr, .. } => Some(*addr),
        ServiceKey::Fwmark { .. } => None,
    }
}

/// The table as a full sync's plan needs it: every service from one cheap
/// read ([`Listing::read`]), and by netlink those of `desired` that it
/// cannot show entirely. Falls back to [`IpvsClient::list_configs`] when
/// there is no listing.
pub fn read_for_plan(
    client: &mut IpvsClient,
    desired: &[ServiceKey],
) -> Result<Vec<ServiceConfig>, IpvsError> {
    let ipv6 = desired.iter().any(|k| k.family() == Family::V6);
    match Listing::read(client, ipv6) {
        Some(listing) => table_for_plan(client, desired.iter().copied(), listing),
        None => client.list_configs(),
    }
}

/// [`read_for_plan`] from `listing`, just read: getsockopt's IPv4 table,
/// the desired services it does not show whole by netlink, and the other
/// IPv6 services the listing holds (strays a plan may delete) by netlink
/// too.
pub fn table_for_plan(
    client: &mut IpvsClient,
    desired: impl IntoIterator<Item = ServiceKey>,
    listing: Listing,
) -> Result<Vec<ServiceConfig>, IpvsError> {
    let Listing { services, glance } = listing;
    let mut deep: BTreeSet<ServiceKey> = desired
        .into_iter()
        .filter(|key| !glance.shows(key))
        .collect();
    deep.extend(glance.ipv6.into_iter().flatten());
    let mut table = services;
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
