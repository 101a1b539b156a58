//! The members of one policy set, each with the number of pods that put
//! it there (two pods may share an address), as a vector sorted by
//! member: about a third of the bytes of a `BTreeMap` of the same
//! entries at 65k members in 1.6k sets (BENCHMARKS.md).

use crate::desired::Member;

#[derive(Debug, Default)]
pub(super) struct MemberCounts {
    /// Sorted by member, one entry each, unless `pending`.
    entries: Vec<(Member, u32)>,
    /// Pushed in any order by [`Self::push`] and not yet merged: a whole
    /// build appends, then sorts once (inserting each of thousands of
    /// members into its place would move the vector each time).
    pending: bool,
}

impl MemberCounts {
    /// One more pod puts `member` here, merged later by [`Self::settle`].
    pub fn push(&mut self, member: Member) {
        self.entries.push((member, 1));
        self.pending = true;
    }

    /// Sorts and merges what [`Self::push`] appended, and gives back the
    /// spare capacity.
    pub fn settle(&mut self) {
        if self.pending {
            self.entries.sort_unstable_by_key(|e| e.0);
            self.entries.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    kept.1 += later.1;
                }
                same
            });
            self.pending = false;
        }
        self.entries.shrink_to_fit();
    }

    /// One more (`add`) or one fewer pod puts `member` here; returns how
    /// many did before.
    pub fn change(&mut self, member: Member, add: bool) -> u32 {
        if self.pending {
            self.settle();
        }
        match self.entries.binary_search_by(|e| e.0.cmp(&member)) {
            Ok(i) => {
                let before = self.entries[i].1;
                match (add, before) {
                    (true, _) => self.entries[i].1 += 1,
                    (false, 1) => {
                        self.entries.remove(i);
                    }
                    (false, _) => self.entries[i].1 -= 1,
                }
                before
            }
            Err(i) => {
                if add {
                    self.entries.insert(i, (member, 1));
                }
                0
            }
        }
    }

    pub fn contains(&self, member: &Member) -> bool {
        if self.pending {
            return self.entries.iter().any(|e| e.0 == *member);
        }
        self.entries.binary_search_by(|e| e.0.cmp(member)).is_ok()
    }

    /// Every member (a member may repeat while `pending`).
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.entries.iter().map(|e| &e.0)
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
}
