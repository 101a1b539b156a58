//! One direction's dispatch from a top chain to the guarded local pods'
//! chains: the set of their addresses the top chain matches, and the
//! chains that find the pod's chain for an address.
//!
//! The dispatch chain picks a bucket by the address's low 4 bits (a
//! non-contiguous mask, `-d 0.0.0.3/0.0.0.15`), the bucket chain holds a
//! rule per address in it: a guarded pod's packet walks at most 16
//! bucket rules and its bucket's pods (pod addresses are handed out in
//! sequence, so the low bits spread them), and where an address lands
//! never depends on the other pods, so a pod that comes or goes moves
//! lines of its bucket only. Every step is a goto (`-g`): the pod chain's
//! end returns to the top chain, past every other rule here.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::{
    controllers::fragments::host,
    desired::{Chain, Family, Member, SetSpec, SetType},
};

/// The addresses guarded in one direction, with their pods' chains.
pub struct Dispatch {
    family: Family,
    set: String,
    members: BTreeSet<Member>,
    /// (address, pod chain), in pod order.
    targets: Vec<(IpAddr, String)>,
}

impl Dispatch {
    /// `base` is the set's name (`names::SET_GUARDED_*`).
    pub fn new(base: &str, family: Family) -> Self {
        Self {
            family,
            set: family.set_name(base),
            members: BTreeSet::new(),
            targets: Vec::new(),
        }
    }

    pub fn add(&mut self, ip: &IpAddr, chain: &str) {
        self.members.insert(Member::ip(*ip));
        self.targets.push((*ip, chain.to_string()));
    }

    /// Whether any pod is guarded in this direction.
    pub fn any(&self) -> bool {
        !self.members.is_empty()
    }

    /// The set's name in this family.
    pub fn set(&self) -> &str {
        &self.set
    }

    /// `-m set --match-set SET dir -j CHAIN`, if any pod is guarded.
    pub fn entry(&self, dir: &str, chain: &str) -> Option<String> {
        self.any()
            .then(|| format!("-m set --match-set {} {dir} -j {chain}", self.set))
    }

    pub fn set_spec(&self) -> Option<SetSpec> {
        self.any().then(|| SetSpec {
            name: self.set.clone(),
            set_type: SetType::HashIp,
            family: self.family,
            members: self.members.clone(),
        })
    }

    /// The dispatch chain `name` and its bucket chains `name-B`, matching
    /// addresses with `at` (`-d` or `-s`); none when no pod is guarded.
    /// Two pods of one address (for a moment) both apply, as a walk would
    /// have it: every rule of it but the last jumps instead of going.
    pub fn chains(&self, name: &str, at: &str) -> Vec<Chain> {
        let last: HashMap<&IpAddr, usize> = self
            .targets
            .iter()
            .enumerate()
            .map(|(i, (ip, _))| (ip, i))
            .collect();
        let mut buckets: BTreeMap<u8, Vec<String>> = BTreeMap::new();
        for (i, (ip, chain)) in self.targets.iter().enumerate() {
            let verb = if last[ip] == i { "-g" } else { "-j" };
            buckets
                .entry(bucket(ip))
                .or_default()
                .push(format!("{at} {} {verb} {chain}", host(ip)));
        }
        if buckets.is_empty() {
            return Vec::new();
        }
        let mut dispatch = Chain {
            name: name.to_string(),
            rules: Vec::new(),
        };
        let mut out = Vec::new();
        for (b, rules) in buckets {
            let sub = format!("{name}-{b}");
            dispatch
                .rules
                .push(format!("{at} {} -g {sub}", bucket_match(self.family, b)));
            out.push(Chain { name: sub, rules });
        }
        out.insert(0, dispatch);
        out
    }
}

/// The low 4 bits of the address.
fn bucket(ip: &IpAddr) -> u8 {
    let low = match ip {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    };
    low & 0x0f
}

/// Addresses of bucket `b`, as iptables-save prints them.
fn bucket_match(family: Family, b: u8) -> String {
    match family {
        Family::V4 => format!("{}/0.0.0.15", Ipv4Addr::from(u32::from(b))),
        Family::V6 => format!("{}/::f", Ipv6Addr::from(u128::from(b))),
    }
}
