//! The eBPF mirror of the service sets: the store's mirror hook writes the
//! desired content of `ipwarden-svip-prt` and `ipwarden-svip` (both
//! families) into the BPF maps, in place (insert or update what is new,
//! delete what is gone; never delete-all-then-add, which would leave the
//! program a window with an empty mirror). Each entry carries the id of the
//! Service its member serves, handed over with the sets by the store. Then
//! the classifier's fast table is published from the same content (the
//! other half written, then flipped: see `table.rs`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipwarden_common::{
    maps::{FLAG_CHAIN_DECIDES, FLAG_MISSING_FROM_KERNEL},
    ServiceKey, ServiceValue, VipKey, VipValue,
};

use super::maps::MirrorMaps;
use crate::{
    desired::{Member, MemberServices, MirroredMember, ServiceRef, SetDelta, SetSpec, VsKey},
    store::MirrorSink,
};

/// A stable id for a Service: FNV-1a of "Service NAMESPACE/NAME", so it is
/// the same in every agent and across restarts.
pub fn service_id(service: &ServiceRef) -> u32 {
    service.to_string().bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A virtual service's key as the mirror's map key.
pub fn key_of(vs: &VsKey) -> ServiceKey {
    match vs.addr {
        IpAddr::V4(a) => ServiceKey::v4(a.octets(), vs.proto.number(), vs.port),
        IpAddr::V6(a) => ServiceKey::v6(a.octets(), vs.proto.number(), vs.port),
    }
}

/// A service port member (`10.0.0.1,tcp:80`) as a map key; None for
/// members of other shapes.
pub fn key_of_member(member: &Member) -> Option<ServiceKey> {
    let Member::IpPort { addr, proto, port } = *member else {
        return None;
    };
    Some(key_of(&VsKey { addr, proto, port }))
}

/// A VIP member (`10.0.0.1`) as a map key.
fn vip_of_member(member: &Member) -> Option<VipKey> {
    let Member::Ip(addr) = *member else {
        return None;
    };
    let key = match addr {
        IpAddr::V4(a) => ServiceKey::v4(a.octets(), 0, 0),
        IpAddr::V6(a) => ServiceKey::v6(a.octets(), 0, 0),
    };
    Some(VipKey::of(&key))
}

/// Owns the mirror maps.
pub struct BpfMirror {
    maps: MirrorMaps,
    /// The Service id of each mirrored service port, from the last sync.
    ids: BTreeMap<ServiceKey, u32>,
    /// Members only the chain may accept (never marked).
    chain_decides: BTreeSet<ServiceKey>,
    /// Members the auditor found missing from the kernel set.
    missing: BTreeSet<ServiceKey>,
    /// The last desired content, to re-flag without a new apply.
    want_services: BTreeSet<ServiceKey>,
    want_vips: BTreeSet<VipKey>,
    /// Map writes that failed (the map full, say), for metrics.
    pub write_errors: u64,
}

impl BpfMirror {
    pub(super) fn new(maps: MirrorMaps) -> Self {
        Self {
            maps,
            ids: BTreeMap::new(),
            chain_decides: BTreeSet::new(),
            missing: BTreeSet::new(),
            want_services: BTreeSet::new(),
            want_vips: BTreeSet::new(),
            write_errors: 0,
        }
    }

    fn value(&self, key: &ServiceKey) -> ServiceValue {
        // 0: a member no Service was named for.
        let service_id = self.ids.get(key).copied().unwrap_or(0);
        let mut flags = 0;
        if self.missing.contains(key) {
            flags |= FLAG_MISSING_FROM_KERNEL;
        }
        if self.chain_decides.contains(key) {
            flags |= FLAG_CHAIN_DECIDES;
        }
        ServiceValue { flags, service_id }
    }

    /// Brings the maps to `sets`; returns how many entries were wrong.
    fn sync(&mut self, sets: &[&SetSpec], services: &MemberServices) -> usize {
        let members = sets.iter().flat_map(|s| &s.members);
        self.want_services = members.clone().filter_map(key_of_member).collect();
        self.want_vips = members.filter_map(vip_of_member).collect();
        self.ids = services
            .iter()
            .filter_map(|(m, info)| Some((key_of_member(m)?, service_id(&info.service))))
            .collect();
        self.chain_decides = services
            .iter()
            .filter(|(_, info)| info.chain_decides)
            .filter_map(|(m, _)| key_of_member(m))
            .collect();
        let wrong = self.write_services() + self.write_vips();
        self.publish();
        wrong
    }

    /// The classifier's table from the desired content.
    fn publish(&mut self) {
        let members = self
            .want_services
            .iter()
            .map(|k| (*k, self.value(k).flags))
            .collect();
        if let Err(e) = self.maps.publish(&members, &self.want_vips) {
            tracing::error!("publishing the classifier's table: {e}");
            self.write_errors += 1;
        }
    }

    /// The classifier's table at the members `deltas` name.
    fn publish_changes(&mut self, deltas: &[&SetDelta]) {
        let named = deltas.iter().flat_map(|d| d.add.iter().chain(&d.del));
        let mut members = BTreeMap::new();
        let mut vips = BTreeMap::new();
        for m in named {
            if let Some(key) = key_of_member(m) {
                let want = self.want_services.contains(&key);
                members.insert(key, want.then(|| self.value(&key).flags));
            }
            if let Some(vip) = vip_of_member(m) {
                vips.insert(vip, self.want_vips.contains(&vip));
            }
        }
        match self.maps.publish_changes(&members, &vips) {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::error!("publishing the classifier's table: {e}");
                self.write_errors += 1;
            }
            None => self.publish(),
        }
    }

    /// One member gone from a mirrored set: its entry goes (from the
    /// maps here; from the classifier's table at the next publish).
    fn forget(&mut self, member: &Member) {
        if let Some(key) = key_of_member(member) {
            self.want_services.remove(&key);
            self.ids.remove(&key);
            self.chain_decides.remove(&key);
            self.missing.remove(&key);
            self.remove_service(&key);
        }
        if let Some(vip) = vip_of_member(member) {
            self.want_vips.remove(&vip);
            if self.maps.vips.remove(&vip).is_err() && self.maps.vips.get(&vip, 0).is_ok() {
                self.write_errors += 1;
            }
        }
    }

    /// One member new in a mirrored set (or serving another Service): its
    /// entry is written (the table follows at the next publish).
    fn learn(&mut self, member: &Member, info: Option<&MirroredMember>) {
        if let Some(key) = key_of_member(member) {
            self.want_services.insert(key);
            match info {
                Some(info) => self.ids.insert(key, service_id(&info.service)),
                None => self.ids.remove(&key),
            };
            if info.is_some_and(|i| i.chain_decides) {
                self.chain_decides.insert(key);
            } else {
                self.chain_decides.remove(&key);
            }
            let value = self.value(&key);
            if self.maps.services.insert(key, value, 0).is_err() {
                self.write_errors += 1;
            }
        }
        if let Some(vip) = vip_of_member(member) {
            self.want_vips.insert(vip);
            if self.maps.vips.insert(vip, VipValue::default(), 0).is_err() {
                self.write_errors += 1;
            }
        }
    }

    /// Removes one service entry; one already gone is no error.
    fn remove_service(&mut self, key: &ServiceKey) {
        if self.maps.services.remove(key).is_err() && self.maps.services.get(key, 0).is_ok() {
            self.write_errors += 1;
        }
    }

    fn write_services(&mut self) -> usize {
        let have: BTreeMap<ServiceKey, ServiceValue> =
            self.maps.services.iter().filter_map(Result::ok).collect();
        let mut wrong = 0;
        for key in self.want_services.clone() {
            let want = self.value(&key);
            if have.get(&key) != Some(&want) {
                wrong += 1;
                if self.maps.services.insert(key, want, 0).is_err() {
                    self.write_errors += 1;
                }
            }
        }
        for key in have.keys().filter(|k| !self.want_services.contains(k)) {
            wrong += 1;
            if self.maps.services.remove(key).is_err() {
                self.write_errors += 1;
            }
        }
        wrong
    }

    fn write_vips(&mut self) -> usize {
        let have: BTreeSet<VipKey> = self.maps.vips.keys().filter_map(Result::ok).collect();
        let mut wrong = 0;
        for key in self.want_vips.difference(&have) {
            wrong += 1;
            if self.maps.vips.insert(key, VipValue::default(), 0).is_err() {
                self.write_errors += 1;
            }
        }
        for key in have.difference(&self.want_vips) {
            wrong += 1;
            if self.maps.vips.remove(key).is_err() {
                self.write_errors += 1;
            }
        }
        wrong
    }

    /// Hits for `key` summed over CPUs; zero when it is not mirrored.
    pub fn hits(&self, key: &ServiceKey) -> Result<super::HitTotals, super::BpfError> {
        self.maps.hits(key)
    }

    /// Map and table writes that failed so far.
    pub fn errors(&self) -> u64 {
        self.write_errors + self.maps.write_errors
    }
}

impl MirrorSink for BpfMirror {
    fn mirror(&mut self, sets: &[&SetSpec], services: &MemberServices) {
        // Right after a verified apply the kernel holds every member.
        self.missing.clear();
        self.sync(sets, services);
    }

    fn mirror_changes(&mut self, deltas: &[&SetDelta], services: &MemberServices) {
        for d in deltas {
            for m in &d.del {
                self.forget(m);
            }
            for m in &d.add {
                self.learn(m, services.get(m));
            }
        }
        // The classifier reads the fast table, not the maps: one publish
        // for the whole change, of the members and VIPs it names only
        // (their buckets and bitmap words written into the inactive half,
        // then the flip; nothing at all when the content is unchanged).
        if !deltas.is_empty() {
            self.publish_changes(deltas);
        }
    }

    fn missing_from_kernel(&mut self, missing: &BTreeMap<String, BTreeSet<Member>>) {
        self.missing = missing
            .values()
            .flatten()
            .filter_map(key_of_member)
            .collect();
        self.write_services();
        self.publish();
    }

    fn audit(&mut self, sets: &[&SetSpec], services: &MemberServices) -> usize {
        self.sync(sets, services)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::desired::Protocol;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn members_become_keys() {
        let k = key_of_member(&Member::ip_port(ip("10.96.0.10"), Protocol::Tcp, 80)).unwrap();
        assert_eq!(
            (k.family, k.proto, k.port, &k.addr[..4]),
            (2, 6, 80, &[10, 96, 0, 10][..])
        );
        let k6 = key_of_member(&Member::ip_port(ip("fd00::10"), Protocol::Udp, 53)).unwrap();
        assert_eq!((k6.family, k6.proto, k6.port), (10, 17, 53));
        let sctp = Member::ip_port(ip("10.0.0.1"), Protocol::Sctp, 3868);
        assert_eq!(key_of_member(&sctp).unwrap().proto, 132);
        assert!(key_of_member(&Member::ip(ip("10.0.0.1"))).is_none());
        // Text can no longer be malformed; a member of another shape is
        // what has no key now.
        assert!(key_of_member(&Member::net("10.0.0.0/8".parse().unwrap())).is_none());
        assert!(vip_of_member(&Member::ip(ip("10.0.0.1"))).is_some());
        assert!(vip_of_member(&sctp).is_none());
    }

    #[test]
    fn a_virtual_service_key_is_its_member_key() {
        let vs = VsKey {
            addr: ip("fd00::10"),
            proto: Protocol::Udp,
            port: 53,
        };
        assert_eq!(
            Some(key_of(&vs)),
            key_of_member(&Member::ip_port(ip("fd00::10"), Protocol::Udp, 53))
        );
    }

    #[test]
    fn service_ids_are_stable() {
        let web = ServiceRef::new("shop", "web");
        assert_eq!(service_id(&web), service_id(&web.clone()));
        assert_ne!(
            service_id(&web),
            service_id(&ServiceRef::new("shop", "api"))
        );
        // The id of "Service shop/web" before ServiceRef existed (README).
        let fnv = "Service shop/web".bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        assert_eq!(service_id(&web), fnv);
    }
}
