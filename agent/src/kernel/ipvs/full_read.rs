//! A full sync's read of the whole IPVS table, and the check that lets a
//! periodic full sync of an unchanged table skip parsing and comparing it.
//!
//! The cheap read of every destination (`readback::Listing`: getsockopt)
//! is cheap in the kernel, but planning 10k
//! Services against it is not. So when a plan found the table equal to
//! the desired services, [`FullRead`] keeps two fingerprints: one of those
//! desired services (and of what decides which kernel services are ours),
//! one of the listing it read, connection counters left out. A later full
//! sync whose desired services and listing give the same two fingerprints
//! has the table that plan found equal: nothing to plan, nothing to write.
//! When the desired services are those of that plan, getsockopt's entries
//! are first hashed as they come, decoding none ([`Glance`]): the same
//! fingerprint, at a fraction of the user-space work; only a miss decodes
//! the table, in a second read.
//! Any change of the listing (a service deleted or added, a destination
//! deleted, added or reweighted, a scheduler or flag changed, even the
//! same table in another order) misses and takes the whole way. What the
//! listing cannot show is read by netlink either way, as before; a table
//! read all by netlink (no listing) is never remembered.

use std::{
    collections::BTreeSet,
    hash::{DefaultHasher, Hash, Hasher},
    net::IpAddr,
};

use super::{
    readback::{self, Glance, Listing},
    sync::{self, IpvsReport, IpvsScope},
    Destination, IpvsClient, IpvsError, Service, ServiceConfig, ServiceKey,
};
use crate::desired::VirtualService;

/// A full sync's table, or the news that it is what was last found equal.
pub enum Table {
    /// Unchanged since a plan found it equal to these desired services:
    /// how many services that is.
    Unchanged(usize),
    /// Read: plan the desired services ([`sync::kernel_forms`]) against
    /// `actual`, then tell [`FullRead::planned`].
    Read { actual: Vec<ServiceConfig> },
}

/// The two fingerprints of a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprints {
    desired: u64,
    listing: u64,
}

/// What a service's full syncs remember between reads.
#[derive(Debug, Default)]
pub struct FullRead {
    /// The last read that a plan found equal to its desired services, and
    /// how many services that plan left unchanged.
    matched: Option<(Fingerprints, usize)>,
    /// The read being planned now (None: read by netlink).
    pending: Option<Fingerprints>,
}

impl FullRead {
    /// Reads the table for a full sync of `desired`; `deep`: every field by
    /// netlink (one request per service), else the cheap listing and
    /// netlink for what it cannot show. `vips` and `node_ips` decide which
    /// services are ours.
    pub fn read(
        &mut self,
        client: &mut IpvsClient,
        desired: &[&VirtualService],
        vips: &BTreeSet<IpAddr>,
        node_ips: &[IpAddr],
        deep: bool,
    ) -> Result<Table, IpvsError> {
        self.pending = None;
        let ipv6 = desired.iter().any(|vs| vs.key.addr.is_ipv6())
            || vips.iter().chain(node_ips).any(IpAddr::is_ipv6);
        let desired_print = desired_fingerprint(desired, vips, node_ips);
        if !deep {
            if let Some(unchanged) =
                self.unchanged_at_a_glance(client, desired, desired_print, ipv6)?
            {
                tracing::debug!(unchanged, "IPVS as the last plan found it: not planned");
                return Ok(Table::Unchanged(unchanged));
            }
        }
        let listing = if deep {
            None
        } else {
            Listing::read(client, ipv6)
        };
        let Some(listing) = listing else {
            return Ok(Table::Read {
                actual: client.list_configs()?,
            });
        };
        let now = Fingerprints {
            desired: desired_print,
            listing: listing.glance.fingerprint(),
        };
        if let Some((seen, unchanged)) = self.matched {
            if seen == now && hidden_equal(client, desired, &listing.glance)? {
                tracing::debug!(unchanged, "IPVS as the last plan found it: not planned");
                return Ok(Table::Unchanged(unchanged));
            }
        }
        self.pending = Some(now);
        let actual = readback::table_for_plan(client, sync::kernel_keys(desired), listing)?;
        Ok(Table::Read { actual })
    }

    /// When `desired` (`desired_print`) is what the last plan found equal:
    /// whether getsockopt's summary of the table is the one it found, read
    /// without decoding a service ([`Glance`]), and the services the
    /// summary cannot show are as desired. Some(services unchanged) if so;
    /// a miss costs the full read a second pass of getsockopt.
    fn unchanged_at_a_glance(
        &self,
        client: &mut IpvsClient,
        desired: &[&VirtualService],
        desired_print: u64,
        ipv6: bool,
    ) -> Result<Option<usize>, IpvsError> {
        let Some((seen, unchanged)) = self.matched else {
            return Ok(None);
        };
        if seen.desired != desired_print {
            return Ok(None);
        }
        let Some(glance) = Glance::read(client, ipv6)? else {
            return Ok(None);
        };
        if glance.fingerprint() != seen.listing {
            return Ok(None);
        }
        Ok(hidden_equal(client, desired, &glance)?.then_some(unchanged))
    }

    /// What the plan of the last [`Table::Read`] did: `Some(report)`
    /// when every request ran (an error: None).
    pub fn planned(&mut self, report: Option<&IpvsReport>) {
        let pending = self.pending.take();
        match report {
            Some(r) if !r.changed() => {
                if let Some(now) = pending {
                    self.matched = Some((now, r.services_unchanged));
                }
            }
            _ => self.matched = None,
        }
    }
}

/// Whether the desired services `glance`'s listing cannot show entirely
/// are as desired, read by netlink (invalid ones were reported by the
/// controller already).
fn hidden_equal(
    client: &mut IpvsClient,
    desired: &[&VirtualService],
    glance: &Glance,
) -> Result<bool, IpvsError> {
    let hidden: Vec<(Service, Vec<Destination>)> = desired
        .iter()
        .filter(|vs| !glance.shows(&sync::kernel_key(&vs.key)))
        .filter_map(|vs| sync::to_kernel(vs).ok())
        .collect();
    if hidden.is_empty() {
        return Ok(true);
    }
    let keys: Vec<ServiceKey> = hidden.iter().map(|(s, _)| s.key).collect();
    let actual = readback::read_by_netlink(client, &keys)?;
    let (requests, _) = sync::plan(&hidden, &actual, &IpvsScope::default());
    Ok(requests.is_empty())
}

/// The fields of `desired` a plan compares, and what decides which kernel
/// services are ours to delete.
fn desired_fingerprint(
    desired: &[&VirtualService],
    vips: &BTreeSet<IpAddr>,
    node_ips: &[IpAddr],
) -> u64 {
    let mut h = DefaultHasher::new();
    for vs in desired {
        (vs.key, &vs.scheduler, vs.flags, vs.timeout, vs.netmask_bits).hash(&mut h);
        vs.destinations.hash(&mut h);
    }
    vips.hash(&mut h);
    node_ips.hash(&mut h);
    h.finish()
}

#[cfg(test)]
#[path = "full_read_tests.rs"]
mod tests;
