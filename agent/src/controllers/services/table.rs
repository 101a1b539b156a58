//! The service proxy's desired state, keyed: each Service's share, the
//! claimants of every virtual-service key and the unserved frontends by
//! key. A partial sync replaces the shares of the Services a change
//! touches and reads the result back only at their keys and addresses,
//! so its deltas cost what changed, not what the cluster holds.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::{
    already_served, assemble, firewall, health_checks, names, node_ips, plans, share, NodeView,
    Options,
};
use crate::{
    cluster::{compact::Stored, slice_service, Snapshot},
    desired::{
        Family, HealthCheck, Member, MemberServices, MirroredMember, Problem, Protocol, ServiceRef,
        ServiceState, SetDelta, SetSpec, TablePlan, VirtualService, VsKey,
    },
};

use super::ServiceShare;

/// The desired state by key, with what a partial update needs to find
/// its relations (which Service an EndpointSlice serves).
#[derive(Clone, Debug, Default)]
pub struct ServiceTable {
    opts: Options,
    node_ips: Vec<IpAddr>,
    node: NodeView,
    shares: BTreeMap<ServiceRef, ServiceShare>,
    /// The Services claiming each key; the first (in Service order) serves it.
    claims: BTreeMap<VsKey, Few<ServiceRef>>,
    /// Unserved frontends by key (refused unless some Service serves the key).
    unserved: BTreeMap<VsKey, Few<firewall::Unserved>>,
    /// The Service each EndpointSlice named at the last update, so a
    /// slice that went or changed its label still names its old Service
    /// (by name: it is in the slice's namespace).
    slice_owners: BTreeMap<SliceKey, Box<str>>,
    plans: Vec<TablePlan>,
    health: Vec<HealthCheck>,
}

/// What a full sync writes besides the sets and the virtual services,
/// which it takes from the table itself ([`ServiceTable::sets`],
/// [`ServiceTable::virtual_services`]): a whole [`ServiceState`] assembled
/// beside the table would hold every virtual service twice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FullState {
    /// Addresses to hold on ipwarden0.
    pub vips: BTreeSet<IpAddr>,
    pub iptables: Vec<TablePlan>,
    pub health_checks: Vec<HealthCheck>,
    /// Sorted, without duplicates.
    pub problems: Vec<Problem>,
}

/// What a partial update moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceDelta {
    /// Every key the changed Services had or have, with the virtual
    /// service that serves it now (None: gone). These are read back.
    pub ipvs: BTreeMap<VsKey, Option<VirtualService>>,
    pub vips_added: BTreeSet<IpAddr>,
    pub vips_removed: BTreeSet<IpAddr>,
    /// Member deltas; a svip-prt member whose Service changed is re-added
    /// so the eBPF mirror's entry follows.
    pub sets: Vec<SetDelta>,
    /// The Service of each svip-prt member added.
    pub member_services: MemberServices,
    /// The plans, when they changed.
    pub tables: Option<Vec<TablePlan>>,
    /// The health checks, when they changed.
    pub health: Option<Vec<HealthCheck>>,
    /// The changed Services' problems.
    pub problems: Vec<Problem>,
}

impl ServiceDelta {
    pub fn addresses(&self) -> BTreeSet<IpAddr> {
        self.ipvs.keys().map(|k| k.addr).collect()
    }
}

/// What the sets and VIPs say of one address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct AddrView {
    vip: bool,
    svip: bool,
    local: bool,
}

impl ServiceTable {
    pub fn new(opts: Options) -> Self {
        Self {
            opts,
            ..Self::default()
        }
    }

    /// Virtual services in the state (keys some Service serves).
    pub fn len(&self) -> usize {
        self.claims.len()
    }

    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }

    /// Whether any frontend waits for a local endpoint: only then can a
    /// no-local-endpoint rule exist (and its counters be worth reading).
    pub fn has_unserved(&self) -> bool {
        !self.unserved.is_empty()
    }

    pub fn node_ips(&self) -> &[IpAddr] {
        &self.node_ips
    }

    /// Whether the node's side (NodePort addresses, local addresses, pod
    /// CIDRs) differs from `snapshot`'s: only a full rebuild follows that.
    pub fn node_changed(&self, snapshot: &Snapshot) -> bool {
        node_ips(snapshot, &self.opts) != self.node_ips || NodeView::of(snapshot) != self.node
    }

    /// Recomputes everything from `snapshot`; returns what a full sync
    /// writes besides the sets and virtual services.
    pub fn rebuild(&mut self, snapshot: &Snapshot) -> FullState {
        let opts = self.opts;
        *self = Self::new(opts);
        self.node_ips = node_ips(snapshot, &opts);
        self.node = NodeView::of(snapshot);
        // Collected, not inserted one by one: a B-tree built from sorted
        // input has full nodes, one filled in order keeps them half empty.
        self.shares = snapshot
            .services
            .iter()
            .map(|svc| {
                let s = share(svc, snapshot, &self.node_ips, &opts);
                let r = s.service().cloned();
                (r.unwrap_or_else(|| super::ServiceCtx::new(svc).service), s)
            })
            .collect();
        self.claims = grouped(self.shares.iter().flat_map(|(r, s)| {
            s.virtual_services
                .iter()
                .map(move |(vs, _)| (vs.key, r.clone()))
        }));
        self.unserved = grouped(
            self.shares
                .values()
                .flat_map(|s| s.unserved().iter().map(|u| (u.key, u.clone()))),
        );
        self.slice_owners = snapshot
            .endpoint_slices
            .iter()
            .filter_map(|s| {
                let (namespace, name) = s.key();
                let (_, service) = slice_service(s)?;
                Some(((namespace.into(), name.into()), service.into()))
            })
            .collect();
        self.plans = self.plans();
        let full = self.full_state();
        self.health = full.health_checks.clone();
        full
    }

    /// What a full sync writes besides the sets and virtual services, as
    /// [`Self::assemble`] has it.
    pub fn full_state(&self) -> FullState {
        let mut problems = self.problems();
        let all = self
            .shares
            .values()
            .filter_map(|s| s.health_check().cloned())
            .collect();
        let health_checks = health_checks(all, &mut problems);
        problems.sort();
        problems.dedup();
        FullState {
            vips: self.vips(),
            iptables: self.plans.clone(),
            health_checks,
            problems,
        }
    }

    /// The six service sets and the Service of each svip-prt member, as
    /// [`Self::assemble`] has them.
    pub fn sets(&self) -> (Vec<SetSpec>, MemberServices) {
        let refused: BTreeSet<IpAddr> = self.refused_all().map(|u| u.key.addr).collect();
        let local: BTreeSet<IpAddr> = self
            .node
            .local_addresses
            .iter()
            .copied()
            .filter(|a| !self.addr_view(*a).vip)
            .collect();
        let sets = firewall::sets(self.claims.keys(), &refused, &local);
        (sets, firewall::member_services(self.virtual_services()))
    }

    /// The shares' problems and every virtual service left out because an
    /// earlier Service serves its key.
    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for share in self.shares.values() {
            out.extend(share.problems().iter().cloned());
            for (vs, _) in share.virtual_services.iter() {
                match self.winner(&vs.key) {
                    Some((first, _)) if !std::ptr::eq(first, vs) => {
                        out.push(already_served(vs, first))
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// The served VIPs and the refused ones.
    fn vips(&self) -> BTreeSet<IpAddr> {
        let served = self
            .claims
            .keys()
            .filter_map(|k| self.winner(k))
            .filter(|(_, vip)| *vip)
            .map(|(vs, _)| vs.key.addr);
        let refused = self.refused_all().filter(|u| u.vip).map(|u| u.key.addr);
        served.chain(refused).collect()
    }

    /// The virtual services in key order, each the one its key's first
    /// claimant serves, as [`Self::assemble`] picks them, without
    /// assembling the sets, rules and members beside them (`/state`).
    pub fn virtual_services(&self) -> impl Iterator<Item = &VirtualService> {
        self.claims
            .keys()
            .filter_map(|key| self.winner(key).map(|(vs, _)| vs))
    }

    /// The whole desired state (the tests, and the memory bench's
    /// comparison): a full sync writes from the table instead.
    pub fn assemble(&self) -> ServiceState {
        assemble(self.shares.values(), &self.node, &self.opts)
    }

    /// The Services `slices` (namespace, name) served before and serve in
    /// `snapshot`; follows the slices' owners.
    pub fn slice_services(
        &mut self,
        slices: &BTreeSet<(String, String)>,
        snapshot: &Snapshot,
    ) -> BTreeSet<ServiceRef> {
        let mut out = BTreeSet::new();
        for (namespace, name) in slices {
            let key: SliceKey = (namespace.as_str().into(), name.as_str().into());
            if let Some(service) = self.slice_owners.remove(&key) {
                out.insert(ServiceRef::new(namespace.clone(), service));
            }
            let now = snapshot
                .endpoint_slice(namespace, name)
                .and_then(slice_service);
            if let Some((namespace, service)) = now {
                out.insert(ServiceRef::new(namespace, service));
                self.slice_owners.insert(key, service.into());
            }
        }
        out
    }

    /// Replaces the shares of `services` with those of `snapshot`; returns
    /// what moved. The node's side must be unchanged (see `node_changed`).
    pub fn update(&mut self, services: &BTreeSet<ServiceRef>, snapshot: &Snapshot) -> ServiceDelta {
        let new: Vec<(ServiceRef, Option<ServiceShare>)> = services
            .iter()
            .map(|r| {
                let svc = snapshot.service(&r.namespace, &r.name);
                let s = svc.map(|svc| share(svc, snapshot, &self.node_ips, &self.opts));
                (r.clone(), s)
            })
            .collect();
        let mut keys: BTreeSet<VsKey> = BTreeSet::new();
        for r in services {
            keys.extend(self.shares.get(r).into_iter().flat_map(share_keys));
        }
        keys.extend(
            new.iter()
                .filter_map(|(_, s)| s.as_ref())
                .flat_map(share_keys),
        );
        let addrs: BTreeSet<IpAddr> = keys.iter().map(|k| k.addr).collect();
        let before = self.view(&keys, &addrs);
        let mut delta = ServiceDelta::default();
        // Whether a key is refused depends on the Services claiming it.
        let mut tables = keys.iter().any(|k| self.unserved.contains_key(k));
        let mut health = false;
        for (r, s) in new {
            let old = self.remove(&r);
            tables |= firewall_part(old.as_ref()) != firewall_part(s.as_ref());
            health |= old.as_ref().and_then(ServiceShare::health_check)
                != s.as_ref().and_then(ServiceShare::health_check);
            if let Some(s) = s {
                delta.problems.extend(s.problems().iter().cloned());
                self.insert(r, s);
            }
        }
        let after = self.view(&keys, &addrs);
        self.fill_delta(&before, &after, &mut delta);
        if tables {
            let plans = self.plans();
            if plans != self.plans {
                self.plans = plans.clone();
                delta.tables = Some(plans);
            }
        }
        if health {
            let checks = self.health_checks();
            if checks != self.health {
                self.health = checks.clone();
                delta.health = Some(checks);
            }
        }
        delta
    }

    fn insert(&mut self, r: ServiceRef, s: ServiceShare) {
        let r = s.service().cloned().unwrap_or(r);
        for (vs, _) in &s.virtual_services {
            self.claims.entry(vs.key).or_default().insert(r.clone());
        }
        for u in s.unserved() {
            self.unserved.entry(u.key).or_default().insert(u.clone());
        }
        self.shares.insert(r, s);
    }

    fn remove(&mut self, r: &ServiceRef) -> Option<ServiceShare> {
        let old = self.shares.remove(r)?;
        for (vs, _) in &old.virtual_services {
            forget(&mut self.claims, vs.key, r);
        }
        for u in old.unserved() {
            forget(&mut self.unserved, u.key, u);
        }
        Some(old)
    }

    /// The virtual service serving `key`, and whether its address is a VIP.
    fn winner(&self, key: &VsKey) -> Option<(&VirtualService, bool)> {
        let first = self.claims.get(key)?.first()?;
        self.shares[first]
            .virtual_services
            .iter()
            .find(|(vs, _)| vs.key == *key)
            .map(|(vs, vip)| (vs, *vip))
    }

    /// Unserved frontends at `key` that are refused (no Service serves it).
    fn refused(&self, key: &VsKey) -> impl Iterator<Item = &firewall::Unserved> {
        let served = self.claims.contains_key(key);
        self.unserved
            .get(key)
            .into_iter()
            .flat_map(|few| few.0.iter())
            .filter(move |_| !served)
    }

    /// Every refused unserved frontend, in key order.
    fn refused_all(&self) -> impl Iterator<Item = &firewall::Unserved> {
        self.unserved.keys().flat_map(|k| self.refused(k))
    }

    fn addr_view(&self, addr: IpAddr) -> AddrView {
        let range = || {
            let lo = VsKey {
                addr,
                proto: Protocol::Tcp,
                port: 0,
            };
            let hi = VsKey {
                addr,
                proto: Protocol::Sctp,
                port: u16::MAX,
            };
            lo..=hi
        };
        let served = self.claims.range(range()).map(|(k, _)| k);
        let refused = self
            .unserved
            .range(range())
            .flat_map(|(k, _)| self.refused(k));
        let mut view = AddrView::default();
        for k in served {
            view.svip = true;
            view.vip |= self.winner(k).is_some_and(|(_, vip)| vip);
        }
        for u in refused {
            view.svip = true;
            view.vip |= u.vip;
        }
        view.local = !view.vip && self.node.local_addresses.contains(&addr);
        view
    }

    fn view(&self, keys: &BTreeSet<VsKey>, addrs: &BTreeSet<IpAddr>) -> View {
        View {
            keys: keys
                .iter()
                .map(|k| (*k, self.winner(k).map(|(vs, _)| vs.clone())))
                .collect(),
            addrs: addrs.iter().map(|a| (*a, self.addr_view(*a))).collect(),
        }
    }

    fn fill_delta(&self, before: &View, after: &View, delta: &mut ServiceDelta) {
        let mut sets: BTreeMap<String, SetDelta> = BTreeMap::new();
        let mut moved = |set: String, member: Member, add: bool| {
            let d = sets.entry(set.clone()).or_insert_with(|| SetDelta {
                set,
                ..SetDelta::default()
            });
            if add { &mut d.add } else { &mut d.del }.push(member);
        };
        for (key, now) in &after.keys {
            let was = &before.keys[key];
            let set = Family::of(&key.addr).set_name(names::SET_SVIP_PRT);
            let member = firewall::svip_prt_member(key);
            match (was, now) {
                (Some(_), None) => moved(set, member, false),
                (was, Some(vs))
                    if was.as_ref().map(MirroredMember::of) != Some(MirroredMember::of(vs)) =>
                {
                    delta.member_services.insert(member, MirroredMember::of(vs));
                    moved(set, member, true);
                }
                _ => {}
            }
            delta.ipvs.insert(*key, now.clone());
        }
        for (addr, now) in &after.addrs {
            let was = before.addrs[addr];
            let family = Family::of(addr);
            for (base, b, a) in [
                (names::SET_SVIP, was.svip, now.svip),
                (names::SET_LOCAL_IPS, was.local, now.local),
            ] {
                if a != b {
                    moved(family.set_name(base), Member::ip(*addr), a);
                }
            }
            match (was.vip, now.vip) {
                (false, true) => delta.vips_added.insert(*addr),
                (true, false) => delta.vips_removed.insert(*addr),
                _ => false,
            };
        }
        delta.sets = sets.into_values().filter(|d| !d.is_empty()).collect();
    }

    /// The plans from every share (only when a firewall part moved).
    fn plans(&self) -> Vec<TablePlan> {
        let mut restrictions = Vec::new();
        let mut nat = Vec::new();
        for s in self.shares.values() {
            restrictions.extend(s.restrictions().iter().cloned());
            nat.extend(s.nat().iter().cloned());
        }
        let unserved: Vec<firewall::Unserved> = self.refused_all().cloned().collect();
        plans(restrictions, unserved, nat, &self.node, &self.opts)
    }

    fn health_checks(&self) -> Vec<HealthCheck> {
        let all = self
            .shares
            .values()
            .filter_map(|s| s.health_check().cloned())
            .collect();
        health_checks(all, &mut Vec::new())
    }
}

/// Resolved content at the keys and addresses one update touches.
struct View {
    keys: BTreeMap<VsKey, Option<VirtualService>>,
    addrs: BTreeMap<IpAddr, AddrView>,
}

type FirewallPart<'a> = (
    &'a [super::SourceRestriction],
    &'a [super::NatException],
    &'a [firewall::Unserved],
);

fn firewall_part(s: Option<&ServiceShare>) -> Option<FirewallPart<'_>> {
    s.map(|s| (s.restrictions(), s.nat(), s.unserved()))
        .filter(|(r, n, u)| !(r.is_empty() && n.is_empty() && u.is_empty()))
}

fn share_keys(s: &ServiceShare) -> impl Iterator<Item = VsKey> + '_ {
    s.keys().chain(s.unserved().iter().map(|u| u.key))
}

fn forget<T: Ord>(map: &mut BTreeMap<VsKey, Few<T>>, key: VsKey, item: &T) {
    if let Some(set) = map.get_mut(&key) {
        set.remove(item);
        if set.is_empty() {
            map.remove(&key);
        }
    }
}

/// Items by key, each key's few sorted and without duplicates (as
/// [`Few::insert`] keeps them), the map built in one go.
fn grouped<T: Ord>(pairs: impl Iterator<Item = (VsKey, T)>) -> BTreeMap<VsKey, Few<T>> {
    let mut pairs: Vec<(VsKey, T)> = pairs.collect();
    pairs.sort();
    pairs.dedup();
    let mut out: Vec<(VsKey, Few<T>)> = Vec::new();
    for (key, item) in pairs {
        match out.last_mut() {
            Some((last, few)) if *last == key => {
                few.0.reserve_exact(1);
                few.0.push(item);
            }
            _ => out.push((key, Few(vec![item]))),
        }
    }
    out.into_iter().collect()
}

/// An EndpointSlice's (namespace, name).
type SliceKey = (Box<str>, Box<str>);

/// A set of the few items one key holds (nearly always one Service), as a
/// sorted vector: a `BTreeSet` allocates a whole B-tree leaf (about 540
/// bytes for a `ServiceRef`) for its first item, 5 MiB at 10k Services.
#[derive(Clone, Debug)]
struct Few<T>(Vec<T>);

impl<T> Default for Few<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: Ord> Few<T> {
    fn insert(&mut self, item: T) {
        if let Err(at) = self.0.binary_search(&item) {
            // Exactly the room needed: a Vec would otherwise take four.
            self.0.reserve_exact(1);
            self.0.insert(at, item);
        }
    }

    fn remove(&mut self, item: &T) {
        if let Ok(at) = self.0.binary_search(item) {
            self.0.remove(at);
        }
    }

    fn first(&self) -> Option<&T> {
        self.0.first()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
