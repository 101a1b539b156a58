//! ipsets as values: the set types we speak and one owner's desired set.

use std::{collections::BTreeSet, fmt};

use super::{Family, Member};

/// The set types ipwarden speaks. The kernel's wire numbers and revisions
/// stay in kernel/ipset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetType {
    HashIp,
    HashIpPort,
    HashNet,
    HashNetPort,
    HashIpPortIp,
}

impl SetType {
    pub const ALL: [SetType; 5] = [
        SetType::HashIp,
        SetType::HashIpPort,
        SetType::HashNet,
        SetType::HashNetPort,
        SetType::HashIpPortIp,
    ];

    /// The kernel's type name, as `ipset create` takes it.
    pub fn name(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashNet => "hash:net",
            SetType::HashNetPort => "hash:net,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
        }
    }

    /// Types whose members may carry `nomatch` (IPSET_TYPE_NOMATCH).
    pub fn has_nomatch(self) -> bool {
        matches!(self, SetType::HashNet | SetType::HashNetPort)
    }
}

impl fmt::Display for SetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One desired set: name, type, family and every member. The store
/// creates it with sizes fitted to the members.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SetSpec {
    pub name: String,
    pub set_type: SetType,
    pub family: Family,
    pub members: BTreeSet<Member>,
}

/// The members one set gains and loses between two desired states of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetDelta {
    pub set: String,
    pub add: Vec<Member>,
    pub del: Vec<Member>,
}

impl SetDelta {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.del.is_empty()
    }
}

/// How one owner's desired sets moved between two states: member deltas of
/// the sets in both (same type and family), and the sets to apply whole
/// (new, or with another type or family) or drop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetChanges {
    pub deltas: Vec<SetDelta>,
    pub whole: Vec<SetSpec>,
    pub removed: Vec<String>,
}

impl SetChanges {
    /// From `old` to `new` (each at most one spec per set name). `touched`
    /// members are added to the delta of every set that holds them even
    /// when unchanged (their Service changed: the mirror's entry must follow).
    pub fn between(old: &[SetSpec], new: &[SetSpec], touched: &BTreeSet<Member>) -> SetChanges {
        let mut out = SetChanges::default();
        for spec in new {
            let Some(before) = old.iter().find(|o| o.name == spec.name) else {
                out.whole.push(spec.clone());
                continue;
            };
            if (before.set_type, before.family) != (spec.set_type, spec.family) {
                out.whole.push(spec.clone());
                continue;
            }
            let delta = SetDelta {
                set: spec.name.clone(),
                add: spec
                    .members
                    .difference(&before.members)
                    .chain(
                        touched
                            .iter()
                            .filter(|m| spec.members.contains(m) && before.members.contains(m)),
                    )
                    .copied()
                    .collect(),
                del: before.members.difference(&spec.members).copied().collect(),
            };
            if !delta.is_empty() {
                out.deltas.push(delta);
            }
        }
        out.removed = old
            .iter()
            .filter(|o| !new.iter().any(|s| s.name == o.name))
            .map(|o| o.name.clone())
            .collect();
        out
    }

    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty() && self.whole.is_empty() && self.removed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, set_type: SetType, members: &[Member]) -> SetSpec {
        SetSpec {
            name: name.into(),
            set_type,
            family: Family::V4,
            members: members.iter().copied().collect(),
        }
    }

    fn ip(s: &str) -> Member {
        Member::Ip(s.parse().unwrap())
    }

    #[test]
    fn deltas_of_kept_sets_whole_new_or_retyped_sets_and_removed_ones() {
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        let old = [
            spec("kept", SetType::HashIp, &[a, b]),
            spec("retyped", SetType::HashIp, &[a]),
            spec("gone", SetType::HashIp, &[a]),
        ];
        let new = [
            spec("kept", SetType::HashIp, &[b, c]),
            spec("retyped", SetType::HashNet, &[a]),
            spec("fresh", SetType::HashIp, &[c]),
        ];
        let changes = SetChanges::between(&old, &new, &BTreeSet::new());
        assert_eq!(
            changes.deltas,
            vec![SetDelta {
                set: "kept".into(),
                add: vec![c],
                del: vec![a],
            }]
        );
        let whole: Vec<&str> = changes.whole.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(whole, ["retyped", "fresh"]);
        assert_eq!(changes.removed, ["gone"]);
    }

    #[test]
    fn touched_members_are_rewritten_where_they_stay_and_nothing_else_is() {
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let old = [spec("s", SetType::HashIp, &[a])];
        let new = old.clone();
        let touched: BTreeSet<Member> = [a, b].into();
        let changes = SetChanges::between(&old, &new, &touched);
        assert_eq!(changes.deltas.len(), 1);
        assert_eq!(changes.deltas[0].add, vec![a]);
        assert!(SetChanges::between(&old, &new, &BTreeSet::new()).is_empty());
    }
}
