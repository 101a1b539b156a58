//! The members of one policy set, each with the number of pods that put
//! it there (two pods may share an address), as a vector sorted by
//! member: about a third of the bytes of a `BTreeMap` of the same
//! entries at 65k members in 1.6k sets (BENCHMARKS.md). A member almost
//! always has one pod, so only the others' numbers are kept, beside.

use crate::desired::Member;

#[derive(Debug, Default)]
pub(super) struct MemberCounts {
    /// Sorted, one entry each, unless `pending`.
    members: Vec<Member>,
    /// The members more than one pod puts here, sorted, with how many.
    shared: Vec<(Member, u32)>,
    /// Pushed in any order by [`Self::push`] and not yet merged: a whole
    /// build appends, then sorts once (inserting each of thousands of
    /// members into its place would move the vector each time).
    pending: bool,
}

impl MemberCounts {
    /// One more pod puts `member` here, merged later by [`Self::settle`].
    pub fn push(&mut self, member: Member) {
        self.members.push(member);
        self.pending = true;
    }

    /// Sorts and merges what [`Self::push`] appended, and gives back the
    /// spare capacity.
    pub fn settle(&mut self) {
        if self.pending {
            self.members.sort_unstable();
            let mut runs: Vec<(Member, u32)> = Vec::new();
            for chunk in self.members.chunk_by(|a, b| a == b) {
                // At most one copy was there before the pushes, and an
                // absent member counts as that first copy.
                let extra = u32::try_from(chunk.len() - 1).expect("fewer pods than u32");
                let before = self.count(&chunk[0]).max(1);
                if before + extra > 1 {
                    runs.push((chunk[0], before + extra));
                }
            }
            self.members.dedup();
            self.shared = runs;
            self.pending = false;
        }
        self.members.shrink_to_fit();
        self.shared.shrink_to_fit();
    }

    /// How many pods put `member` here (0 or 1 unless shared).
    fn count(&self, member: &Member) -> u32 {
        match self.shared.binary_search_by(|e| e.0.cmp(member)) {
            Ok(i) => self.shared[i].1,
            Err(_) => 0,
        }
    }

    /// One more (`add`) or one fewer pod puts `member` here; returns how
    /// many did before.
    pub fn change(&mut self, member: Member, add: bool) -> u32 {
        if self.pending {
            self.settle();
        }
        let Ok(i) = self.members.binary_search(&member) else {
            if add {
                let i = self.members.partition_point(|m| *m < member);
                self.members.insert(i, member);
            }
            return 0;
        };
        let shared = self.shared.binary_search_by(|e| e.0.cmp(&member));
        let before = shared.map_or(1, |s| self.shared[s].1);
        match (add, shared) {
            (true, Ok(s)) => self.shared[s].1 += 1,
            (true, Err(s)) => self.shared.insert(s, (member, 2)),
            (false, Err(_)) => {
                self.members.remove(i);
            }
            (false, Ok(s)) if before == 2 => {
                self.shared.remove(s);
            }
            (false, Ok(s)) => self.shared[s].1 -= 1,
        }
        before
    }

    pub fn contains(&self, member: &Member) -> bool {
        if self.pending {
            return self.members.contains(member);
        }
        self.members.binary_search(member).is_ok()
    }

    /// Every member (a member may repeat while `pending`).
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::MemberCounts;
    use crate::desired::Member;

    fn ip(last: u8) -> Member {
        Member::Ip([10, 0, 0, last].into())
    }

    #[test]
    fn pushed_members_merge_into_counts_that_changes_keep() {
        let mut c = MemberCounts::default();
        for last in [3, 1, 3, 2, 3] {
            c.push(ip(last));
        }
        assert!(c.contains(&ip(3)));
        c.settle();
        let members: Vec<_> = c.members().copied().collect();
        assert_eq!(members, [ip(1), ip(2), ip(3)]);
        assert_eq!(c.change(ip(3), false), 3);
        assert_eq!(c.change(ip(3), false), 2);
        assert_eq!(c.change(ip(3), false), 1);
        assert!(!c.contains(&ip(3)));
        assert_eq!(c.change(ip(0), true), 0);
        assert_eq!(c.change(ip(9), false), 0, "an absent member stays absent");
        let members: Vec<_> = c.members().copied().collect();
        assert_eq!(members, [ip(0), ip(1), ip(2)]);
    }

    #[test]
    fn pushes_after_a_settle_add_to_the_counts_kept() {
        let mut c = MemberCounts::default();
        for last in [1, 1, 2] {
            c.push(ip(last));
        }
        c.settle();
        for last in [1, 2, 2, 3] {
            c.push(ip(last));
        }
        c.settle();
        // 1: 2 + 1, 2: 1 + 2, 3: 0 + 1.
        for (last, pods) in [(1, 3), (2, 3), (3, 1)] {
            assert_eq!(c.change(ip(last), false), pods, "member {last}");
        }
        assert_eq!(c.change(ip(1), false), 2);
        assert_eq!(c.change(ip(1), false), 1);
        assert_eq!(c.change(ip(1), false), 0, "every pod of it is gone");
        assert!(!c.contains(&ip(1)) && c.contains(&ip(2)) && !c.contains(&ip(3)));
    }
}
