//! The difference between what owners want and what the kernel holds, as
//! a plan of set operations. Pure: the store lists the kernel, calls
//! [`plan`], and runs the result.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    desired::{Family, Member, SetSpec, SetType},
    kernel::ipset::Element,
};

/// One set as the kernel holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActualSet {
    pub name: String,
    pub set_type: SetType,
    pub family: Family,
    pub members: BTreeSet<Member>,
    /// Members no desired member can stand for (another program added
    /// `10.0.0.1,icmp:echo-request`, say): nobody wants them, so they are
    /// drift to delete, named in their kernel form.
    pub unrepresentable: Vec<Element>,
    /// The kernel's members were found to be exactly the desired set's
    /// while listed, and not copied (`members` is empty): at 10k members
    /// a no-op sync builds no second set to compare.
    pub as_desired: bool,
}

/// What to do, in the order the store runs it. It refers to the desired
/// sets and the kernel's listing it was planned from instead of copying
/// them: a first apply of the policies' 1,600 sets would otherwise hold a
/// second copy of every member while it writes (BENCHMARKS.md, "the
/// store's plan by reference").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan<'a> {
    /// Sets to create (missing, or replacing one of another type/family).
    pub create: Vec<&'a SetSpec>,
    /// Sets whose type or family must change: filled under a fresh name,
    /// then put in place of the old one (see store::apply).
    pub replace: Vec<&'a SetSpec>,
    /// (set, members) to add to existing sets.
    pub add: Vec<(String, Vec<&'a Member>)>,
    /// (set, members) to delete from existing sets.
    pub delete: Vec<(String, Vec<&'a Member>)>,
    /// (set, kernel members) to delete that no desired member stands for.
    pub delete_unrepresentable: Vec<(String, Vec<&'a Element>)>,
    /// Sets of this scope that nobody wants any more.
    pub destroy: Vec<String>,
}

impl Plan<'_> {
    /// True when nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.is_empty_but_destroying(&[])
    }

    /// True when all that is left to do is destroying some of `sets`.
    pub fn is_empty_but_destroying(&self, sets: &[String]) -> bool {
        self.create.is_empty()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.delete.is_empty()
            && self.delete_unrepresentable.is_empty()
            && self.destroy.iter().all(|d| sets.contains(d))
    }

    /// The names of the sets the plan writes.
    pub fn sets(&self) -> BTreeSet<String> {
        let specs = self.create.iter().chain(&self.replace).map(|s| &s.name);
        let members = self.add.iter().chain(&self.delete).map(|(n, _)| n);
        let other = self.delete_unrepresentable.iter().map(|(n, _)| n);
        specs
            .chain(members)
            .chain(other)
            .chain(&self.destroy)
            .cloned()
            .collect()
    }

    /// Members added plus deleted, for reports and metrics.
    pub fn member_changes(&self) -> usize {
        let created: usize = self
            .create
            .iter()
            .chain(&self.replace)
            .map(|s| s.members.len())
            .sum();
        let changed: usize = self
            .add
            .iter()
            .chain(&self.delete)
            .map(|(_, m)| m.len())
            .sum();
        let unrepresentable: usize = self
            .delete_unrepresentable
            .iter()
            .map(|(_, m)| m.len())
            .sum();
        created + changed + unrepresentable
    }
}

/// The plan that turns the kernel's sets within `scope` into `desired`
/// (each set once, every one within `scope`). Sets outside `scope` are
/// never named in the plan, whatever they hold.
pub(super) fn plan<'a>(
    desired: impl IntoIterator<Item = &'a SetSpec>,
    actual: &'a [ActualSet],
    scope: impl Fn(&str) -> bool,
) -> Plan<'a> {
    let desired: BTreeMap<&str, &SetSpec> =
        desired.into_iter().map(|s| (s.name.as_str(), s)).collect();
    let actual: BTreeMap<&str, &ActualSet> = actual
        .iter()
        .filter(|a| scope(&a.name))
        .map(|a| (a.name.as_str(), a))
        .collect();
    let mut p = Plan::default();
    for (&name, &want) in &desired {
        debug_assert!(scope(name), "desired set {name} outside the plan's scope");
        match actual.get(name) {
            None => p.create.push(want),
            Some(have) if have.set_type != want.set_type || have.family != want.family => {
                p.replace.push(want)
            }
            Some(have) if have.as_desired => {}
            Some(have) => {
                let add: Vec<&Member> = want.members.difference(&have.members).collect();
                let del: Vec<&Member> = have.members.difference(&want.members).collect();
                if !add.is_empty() {
                    p.add.push((name.to_string(), add));
                }
                if !del.is_empty() {
                    p.delete.push((name.to_string(), del));
                }
                if !have.unrepresentable.is_empty() {
                    p.delete_unrepresentable
                        .push((name.to_string(), have.unrepresentable.iter().collect()));
                }
            }
        }
    }
    for name in actual.keys() {
        if !desired.contains_key(name) {
            p.destroy.push(name.to_string());
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member as `ipset save` writes it, read with the kernel layer's
    /// parser.
    fn member(t: SetType, text: &str) -> Member {
        Element::parse(t, text).unwrap().to_desired().unwrap()
    }

    fn members(t: SetType, texts: &[&str]) -> BTreeSet<Member> {
        texts.iter().map(|m| member(t, m)).collect()
    }

    fn spec(name: &str, t: SetType, texts: &[&str]) -> SetSpec {
        SetSpec {
            name: name.into(),
            set_type: t,
            family: Family::V4,
            members: members(t, texts),
        }
    }

    fn actual(name: &str, t: SetType, texts: &[&str]) -> ActualSet {
        ActualSet {
            name: name.into(),
            set_type: t,
            family: Family::V4,
            members: members(t, texts),
            unrepresentable: Vec::new(),
            as_desired: false,
        }
    }

    fn ours(name: &str) -> bool {
        name.starts_with("ipwarden-")
    }

    #[test]
    fn only_differences_are_planned_and_foreign_sets_never_appear() {
        let desired = [
            spec(
                "ipwarden-svip-prt",
                SetType::HashIpPort,
                &["10.0.0.1,tcp:80", "10.0.0.2,tcp:443"],
            ),
            spec("ipwarden-new", SetType::HashIp, &["10.0.0.9"]),
        ];
        let kernel = [
            actual(
                "ipwarden-svip-prt",
                SetType::HashIpPort,
                &["10.0.0.1,tcp:80", "10.0.0.3,udp:53"],
            ),
            actual("ipwarden-stale", SetType::HashIp, &[]),
            actual("istio-ztunnel-pods", SetType::HashIp, &["10.1.0.1"]),
        ];
        let p = plan(&desired, &kernel, ours);
        assert_eq!(p.create.len(), 1);
        assert_eq!(p.create[0].name, "ipwarden-new");
        assert_eq!(
            p.add,
            [(
                "ipwarden-svip-prt".into(),
                vec![&member(SetType::HashIpPort, "10.0.0.2,tcp:443")]
            )]
        );
        assert_eq!(
            p.delete,
            [(
                "ipwarden-svip-prt".into(),
                vec![&member(SetType::HashIpPort, "10.0.0.3,udp:53")]
            )]
        );
        assert_eq!(p.destroy, ["ipwarden-stale"]);
        assert!(!format!("{p:?}").contains("istio"));
        assert_eq!(p.member_changes(), 3);
    }

    #[test]
    fn a_type_change_is_a_replacement_not_a_flush() {
        let desired = [spec("ipwarden-x", SetType::HashNet, &["10.0.0.0/8"])];
        let kernel = [actual("ipwarden-x", SetType::HashIp, &["10.0.0.1"])];
        let p = plan(&desired, &kernel, ours);
        assert_eq!(p.replace.len(), 1);
        assert!(p.add.is_empty() && p.delete.is_empty() && p.destroy.is_empty());
    }

    #[test]
    fn equal_state_is_an_empty_plan() {
        let desired = [spec("ipwarden-a", SetType::HashIp, &["10.0.0.1"])];
        assert!(plan(
            &desired,
            &[actual("ipwarden-a", SetType::HashIp, &["10.0.0.1"])],
            ours
        )
        .is_empty());
    }

    #[test]
    fn a_kernel_member_no_desired_member_stands_for_is_deleted() {
        let desired = [spec(
            "ipwarden-svip-prt",
            SetType::HashIpPort,
            &["10.0.0.1,tcp:80"],
        )];
        let icmp = Element::parse(SetType::HashIpPort, "10.0.0.1,icmp:echo-request").unwrap();
        let mut have = actual(
            "ipwarden-svip-prt",
            SetType::HashIpPort,
            &["10.0.0.1,tcp:80"],
        );
        have.unrepresentable.push(icmp.clone());
        let kernel = [have];
        let p = plan(&desired, &kernel, ours);
        assert_eq!(
            p.delete_unrepresentable,
            [("ipwarden-svip-prt".into(), vec![&icmp])]
        );
        assert!(p.add.is_empty() && p.delete.is_empty());
        assert_eq!(p.member_changes(), 1);
    }
}
