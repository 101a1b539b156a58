//! The before-state of what one update touches, recorded on first touch,
//! and the delta between it and the index after the update.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{super::chains::TopChains, Direction, Key, PolicyIndex};
use crate::desired::{Chain, ChainDelta, ChainEdit, Family, Member, SetDelta, SetSpec, Table};

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

/// A policy chain and its sets (members as the shape has them: blocks;
/// not the members counted per pod, which include the named ingress
/// ports of a ClusterNetworkPolicy's targets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct UnitView {
    pub chain: Chain,
    pub sets: Vec<SetSpec>,
}

#[derive(Default)]
pub(super) struct Journal {
    /// Whether each touched member was present before.
    members: HashMap<String, HashMap<Member, bool>>,
    units: BTreeMap<(Key, Direction), [Option<UnitView>; 2]>,
    pods: BTreeMap<Key, [Option<Chain>; 2]>,
    /// The top chains of each family and their guarded-pod sets.
    top: Option<[TopChains; 2]>,
}

/// What an update moved, for the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyDelta {
    /// Members of sets that existed before and still do.
    pub members: Vec<SetDelta>,
    /// Sets to create, or to rewrite whole (a block's members changed).
    pub created: Vec<SetSpec>,
    /// Sets to destroy once no chain uses them.
    pub destroyed: Vec<String>,
    /// The chain changes of each family that has some.
    pub chains: Vec<ChainDelta>,
}

impl PolicyDelta {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
            && self.created.is_empty()
            && self.destroyed.is_empty()
            && self.chains.is_empty()
    }
}

impl Journal {
    pub(super) fn member(&mut self, set: &str, member: Member, present: bool) {
        if let Some(m) = self.members.get_mut(set) {
            m.entry(member).or_insert(present);
        } else {
            self.members
                .insert(set.to_string(), HashMap::from([(member, present)]));
        }
    }

    pub(super) fn unit(&mut self, index: &PolicyIndex, policy: &Key, d: Direction) {
        self.units
            .entry((policy.clone(), d))
            .or_insert_with(|| FAMILIES.map(|f| index.unit_view(policy, d, f)));
    }

    pub(super) fn pod(&mut self, index: &PolicyIndex, key: &Key) {
        self.pods
            .entry(key.clone())
            .or_insert_with(|| FAMILIES.map(|f| index.pod_chain(key, f)));
        if self.top.is_none() {
            self.top = Some(FAMILIES.map(|f| index.top_chains(f)));
        }
    }

    pub(super) fn finish(self, index: &PolicyIndex) -> PolicyDelta {
        let mut delta = PolicyDelta::default();
        let mut chains = FAMILIES.map(|family| ChainDelta {
            family,
            table: Table::Filter,
            ..ChainDelta::default()
        });
        for ((policy, d), before) in &self.units {
            for (i, family) in FAMILIES.into_iter().enumerate() {
                let now = index.unit_view(policy, *d, family);
                unit_delta(index, before[i].as_ref(), now, &mut chains[i], &mut delta);
            }
        }
        for (key, before) in &self.pods {
            for (i, family) in FAMILIES.into_iter().enumerate() {
                let now = index.pod_chain(key, family);
                chain_delta(before[i].as_ref(), now, &mut chains[i]);
            }
        }
        if let Some(top) = &self.top {
            for (i, family) in FAMILIES.into_iter().enumerate() {
                let now = index.top_chains(family);
                top_chain_deltas(&top[i].chains, now.chains, &mut chains[i]);
                guarded_set_deltas(&top[i].sets, now.sets, &mut delta);
            }
        }
        self.member_deltas(index, &mut delta);
        delta.chains = chains.into_iter().filter(|c| !c.is_empty()).collect();
        delta
    }

    fn member_deltas(&self, index: &PolicyIndex, delta: &mut PolicyDelta) {
        let created: BTreeSet<&str> = delta.created.iter().map(|s| s.name.as_str()).collect();
        let mut sets: Vec<(&String, &HashMap<Member, bool>)> = self.members.iter().collect();
        sets.sort_by(|a, b| a.0.cmp(b.0));
        for (set, touched) in sets {
            if created.contains(set.as_str()) {
                continue;
            }
            let Some((policy, d, family)) = index.set_units.get(set.as_str()) else {
                continue;
            };
            let now_active = index.active(policy, *d, *family);
            let before_active = match self.units.get(&(policy.clone(), *d)) {
                Some(before) => before[family_index(*family)]
                    .as_ref()
                    .is_some_and(|u| u.sets.iter().any(|s| &s.name == set)),
                None => now_active,
            };
            if !(now_active && before_active) {
                continue;
            }
            let counts = index.members.get(set.as_str());
            let mut d = SetDelta {
                set: set.clone(),
                ..SetDelta::default()
            };
            let mut touched: Vec<(&Member, &bool)> = touched.iter().collect();
            touched.sort();
            for (m, was) in touched {
                let is = counts.is_some_and(|c| c.contains(m));
                match (was, is) {
                    (false, true) => d.add.push(*m),
                    (true, false) => d.del.push(*m),
                    _ => {}
                }
            }
            if !d.is_empty() {
                delta.members.push(d);
            }
        }
    }
}

fn family_index(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// One policy chain's change in one family, and its sets'.
fn unit_delta(
    index: &PolicyIndex,
    before: Option<&UnitView>,
    now: Option<UnitView>,
    chains: &mut ChainDelta,
    delta: &mut PolicyDelta,
) {
    let none: &[SetSpec] = &[];
    let old_sets = before.map_or(none, |u| u.sets.as_slice());
    let new_sets = now.as_ref().map_or(none, |u| u.sets.as_slice());
    for s in new_sets {
        match old_sets.iter().find(|o| o.name == s.name) {
            Some(o) if o == s => {}
            _ => delta.created.push(index.set_spec(s)),
        }
    }
    for s in old_sets {
        if !new_sets.iter().any(|n| n.name == s.name) {
            delta.destroyed.push(s.name.clone());
        }
    }
    chain_delta(before.map(|u| &u.chain), now.map(|u| u.chain), chains);
}

/// The top chains edited in place, the dispatch chains written with their
/// first rule and deleted with their last (after the edits that drop the
/// jumps to them: [`crate::kernel::iptables::partial`]'s order).
fn top_chain_deltas(old: &[Chain], new: Vec<Chain>, chains: &mut ChainDelta) {
    for o in old.iter().filter(|o| !new.iter().any(|n| n.name == o.name)) {
        chains.deleted.push(o.name.clone());
    }
    for n in new {
        match old.iter().find(|o| o.name == n.name).map(|o| edit(o, &n)) {
            Some(Some(e)) if e.is_empty() => {}
            Some(Some(e)) => chains.edits.push(e),
            _ => chains.written.push(n),
        }
    }
}

/// The top chains' guarded-pod sets: created with their first member
/// (before the chains that match them), destroyed with their last (after).
fn guarded_set_deltas(old: &[SetSpec], new: Vec<SetSpec>, delta: &mut PolicyDelta) {
    for o in old.iter().filter(|o| !new.iter().any(|n| n.name == o.name)) {
        delta.destroyed.push(o.name.clone());
    }
    for n in new {
        let Some(o) = old.iter().find(|o| o.name == n.name) else {
            delta.created.push(n);
            continue;
        };
        let d = SetDelta {
            set: n.name,
            add: n.members.difference(&o.members).copied().collect(),
            del: o.members.difference(&n.members).copied().collect(),
        };
        if !d.is_empty() {
            delta.members.push(d);
        }
    }
}

fn chain_delta(before: Option<&Chain>, now: Option<Chain>, chains: &mut ChainDelta) {
    match (before, now) {
        (None, None) => {}
        (Some(b), None) => chains.deleted.push(b.name.clone()),
        (Some(b), Some(n)) if *b == n => {}
        (_, Some(n)) => chains.written.push(n),
    }
}

/// The deletes and inserts that turn `old` into `new` (same name), or
/// None when the rules that stay do not keep their order (or repeat):
/// then the chain is rewritten.
fn edit(old: &Chain, new: &Chain) -> Option<ChainEdit> {
    let old_set: BTreeSet<&str> = old.rules.iter().map(String::as_str).collect();
    let new_set: BTreeSet<&str> = new.rules.iter().map(String::as_str).collect();
    if old_set.len() != old.rules.len() || new_set.len() != new.rules.len() {
        return None;
    }
    let kept_old = old.rules.iter().filter(|r| new_set.contains(r.as_str()));
    let kept_new = new.rules.iter().filter(|r| old_set.contains(r.as_str()));
    if !kept_old.eq(kept_new) {
        return None;
    }
    Some(ChainEdit {
        chain: new.name.clone(),
        delete: old
            .rules
            .iter()
            .filter(|r| !new_set.contains(r.as_str()))
            .cloned()
            .collect(),
        insert: new
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| !old_set.contains(r.as_str()))
            .map(|(i, r)| (i + 1, r.clone()))
            .collect(),
    })
}

impl PolicyIndex {
    /// The chain and sets of the unit (policy of either kind, direction)
    /// in `family`, if any local pod it applies to has an address there.
    pub(super) fn unit_view(&self, policy: &Key, d: Direction, family: Family) -> Option<UnitView> {
        if !self.active(policy, d, family) {
            return None;
        }
        let unit = self.render_unit(policy, d, family)?;
        Some(UnitView {
            chain: unit.chain,
            sets: unit.sets,
        })
    }

    /// A set as the shape has it, with its pod members.
    pub(super) fn set_spec(&self, shape: &SetSpec) -> SetSpec {
        let Some(counts) = self.members.get(shape.name.as_str()) else {
            return shape.clone();
        };
        // Collected, not inserted one by one: a B-tree built from the
        // sorted members has full nodes, one filled by inserts half-full
        // ones (the set store keeps these sets: 2.9 against 2.1 MiB of
        // the policies' at 10k, BENCHMARKS.md).
        let members = shape.members.iter().chain(counts.members()).copied();
        SetSpec {
            name: shape.name.clone(),
            set_type: shape.set_type,
            family: shape.family,
            members: members.collect(),
        }
    }
}
