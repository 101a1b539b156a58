//! The eBPF mirror of the service sets: the store's mirror hook writes the
//! desired content of `ipwarden-svip-prt` and `ipwarden-svip` (both
//! families) into the BPF maps, in place (insert or update what is new,
//! delete what is gone; never delete-all-then-add, which would leave the
//! program a window with an empty mirror).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Arc, Mutex},
};

use aya::maps::{HashMap, MapData};
use ipwarden_common::{
    maps::{FLAG_MISSING_FROM_KERNEL, PROTO_SCTP, PROTO_TCP, PROTO_UDP},
    ServiceKey, ServiceValue, VipKey, VipValue,
};

use crate::{
    desired::{SetSpec, SetType, VsKey},
    store::MirrorSink,
};

/// Service ids by key, set by the reconciler before each apply so the
/// mirror can say which Service a member belongs to.
pub type ServiceIds = Arc<Mutex<BTreeMap<ServiceKey, u32>>>;

/// A stable id for a Service ("Service shop/web"): FNV-1a, so it is the
/// same in every agent and across restarts.
pub fn service_id(service: &str) -> u32 {
    service.bytes().fold(0x811c_9dc5u32, |h, b| {
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

/// `10.0.0.1,tcp:80` (ipset save text) as a map key.
pub fn key_of_member(member: &str) -> Option<ServiceKey> {
    let (addr, rest) = member.split_once(',')?;
    let (proto, port) = rest.split_once(':')?;
    let proto = match proto {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "sctp" => PROTO_SCTP,
        n => n.parse().ok()?,
    };
    let port: u16 = port.trim().parse().ok()?;
    Some(match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => ServiceKey::v4(a.octets(), proto, port),
        IpAddr::V6(a) => ServiceKey::v6(a.octets(), proto, port),
    })
}

fn vip_of_member(member: &str) -> Option<VipKey> {
    let key = match member.trim().parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => ServiceKey::v4(a.octets(), 0, 0),
        IpAddr::V6(a) => ServiceKey::v6(a.octets(), 0, 0),
    };
    Some(VipKey::of(&key))
}

/// Owns the two mirror maps.
pub struct BpfMirror {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    vips: HashMap<MapData, VipKey, VipValue>,
    ids: ServiceIds,
    /// Members the auditor found missing from the kernel set.
    missing: BTreeSet<ServiceKey>,
    /// The last desired content, to re-flag without a new apply.
    want_services: BTreeSet<ServiceKey>,
    /// Map writes that failed (the map full, say), for metrics.
    pub write_errors: u64,
}

impl BpfMirror {
    pub(super) fn new(
        services: HashMap<MapData, ServiceKey, ServiceValue>,
        vips: HashMap<MapData, VipKey, VipValue>,
        ids: ServiceIds,
    ) -> Self {
        Self {
            services,
            vips,
            ids,
            missing: BTreeSet::new(),
            want_services: BTreeSet::new(),
            write_errors: 0,
        }
    }

    fn value(&self, key: &ServiceKey) -> ServiceValue {
        let service_id = self
            .ids
            .lock()
            .map(|ids| ids.get(key).copied().unwrap_or(0))
            .unwrap_or(0);
        let flags = if self.missing.contains(key) {
            FLAG_MISSING_FROM_KERNEL
        } else {
            0
        };
        ServiceValue { flags, service_id }
    }

    /// Brings the maps to `sets`; returns how many entries were wrong.
    fn sync(&mut self, sets: &[&SetSpec]) -> usize {
        let mut services = BTreeSet::new();
        let mut vips = BTreeSet::new();
        for s in sets {
            match s.set_type {
                SetType::HashIpPort => {
                    services.extend(s.members.iter().filter_map(|m| key_of_member(m)))
                }
                SetType::HashIp => vips.extend(s.members.iter().filter_map(|m| vip_of_member(m))),
                _ => {}
            }
        }
        self.want_services = services;
        self.write_services() + self.write_vips(&vips)
    }

    fn write_services(&mut self) -> usize {
        let have: BTreeMap<ServiceKey, ServiceValue> =
            self.services.iter().filter_map(Result::ok).collect();
        let mut wrong = 0;
        for key in self.want_services.clone() {
            let want = self.value(&key);
            if have.get(&key) != Some(&want) {
                wrong += 1;
                if self.services.insert(key, want, 0).is_err() {
                    self.write_errors += 1;
                }
            }
        }
        for key in have.keys().filter(|k| !self.want_services.contains(k)) {
            wrong += 1;
            if self.services.remove(key).is_err() {
                self.write_errors += 1;
            }
        }
        wrong
    }

    fn write_vips(&mut self, want: &BTreeSet<VipKey>) -> usize {
        let have: BTreeSet<VipKey> = self.vips.keys().filter_map(Result::ok).collect();
        let mut wrong = 0;
        for key in want.difference(&have) {
            wrong += 1;
            if self.vips.insert(key, VipValue::default(), 0).is_err() {
                self.write_errors += 1;
            }
        }
        for key in have.difference(want) {
            wrong += 1;
            if self.vips.remove(key).is_err() {
                self.write_errors += 1;
            }
        }
        wrong
    }
}

impl MirrorSink for BpfMirror {
    fn mirror(&mut self, sets: &[&SetSpec]) {
        // Right after a verified apply the kernel holds every member.
        self.missing.clear();
        self.sync(sets);
    }

    fn missing_from_kernel(&mut self, missing: &BTreeMap<String, BTreeSet<String>>) {
        self.missing = missing
            .values()
            .flatten()
            .filter_map(|m| key_of_member(m))
            .collect();
        self.write_services();
    }

    fn audit(&mut self, sets: &[&SetSpec]) -> usize {
        self.sync(sets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_into_keys() {
        let k = key_of_member("10.96.0.10,tcp:80").unwrap();
        assert_eq!(
            (k.family, k.proto, k.port, &k.addr[..4]),
            (2, 6, 80, &[10, 96, 0, 10][..])
        );
        let k6 = key_of_member("fd00::10,udp:53").unwrap();
        assert_eq!((k6.family, k6.proto, k6.port), (10, 17, 53));
        assert_eq!(key_of_member("10.0.0.1,sctp:3868").unwrap().proto, 132);
        assert!(key_of_member("10.0.0.1").is_none());
        assert!(key_of_member("nonsense,tcp:1").is_none());
    }

    #[test]
    fn a_virtual_service_key_is_its_member_key() {
        use crate::desired::Protocol;
        let vs = VsKey {
            addr: "fd00::10".parse().unwrap(),
            proto: Protocol::Udp,
            port: 53,
        };
        assert_eq!(Some(key_of(&vs)), key_of_member("fd00::10,udp:53"));
    }

    #[test]
    fn service_ids_are_stable() {
        assert_eq!(
            service_id("Service shop/web"),
            service_id("Service shop/web")
        );
        assert_ne!(
            service_id("Service shop/web"),
            service_id("Service shop/api")
        );
    }
}
