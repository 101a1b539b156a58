//! Desired iptables state of one owner, as values: the chains it owns and
//! the tagged rules it keeps in built-in chains, per table and family.
//! kernel/iptables renders and applies them.

use std::fmt;

use super::Family;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Filter,
    Nat,
    Mangle,
    Raw,
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
            Table::Mangle => "mangle",
            Table::Raw => "raw",
        })
    }
}

/// A chain we own, with its rules in order. Each rule is the text after
/// `-A CHAIN ` written the way `iptables-save` prints it (for example
/// `-p tcp -m tcp --dport 80 -j ACCEPT`), so an unchanged chain is
/// recognised and left alone; a rule written differently still works, it
/// only makes the chain be rewritten on every apply.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<String>,
}

/// A rule we keep at the top of a built-in chain (INPUT, POSTROUTING...),
/// usually a jump into one of our chains. It must carry a comment starting
/// with the owner's tag so that it can be found again among other
/// programs' rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Jump {
    pub from: String,
    pub rule: String,
    pub place: Place,
}

impl Jump {
    /// A jump anywhere in the block of ipwarden rules ([`Place::Block`]).
    pub fn new(from: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            rule: rule.into(),
            place: Place::Block,
        }
    }

    pub fn at(self, place: Place) -> Self {
        Self { place, ..self }
    }
}

/// In the comment of every rule at [`Place::First`], so that the other
/// owners insert theirs below it.
pub const FIRST_TAG: &str = "ipwarden:first";

/// Where a [`Jump`] sits in the block of ipwarden rules at the top of its
/// built-in chain. Several owners keep rules there; each places its own,
/// and an order that holds is never rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    /// The first rules of the chain, above every other owner's: the mark
    /// ACCEPT of allow mode, which accepts only what every chain below
    /// would (its comment carries [`FIRST_TAG`]).
    First,
    /// Anywhere in the block, below the first rules (the policy jumps).
    Block,
    /// Last of the block: it ACCEPTs (the service chain), so it must
    /// never skip another owner's rules (the policy chain's egress
    /// rules for local pods).
    Last,
}

/// Which chains belong to the owner: anything of ours that is in the
/// kernel but not in the plan is deleted, nothing else ever is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ownership {
    /// Exactly these chain names.
    Names(Vec<String>),
    /// Every chain whose name starts with this.
    Prefix(String),
}

impl Ownership {
    pub fn owns(&self, chain: &str) -> bool {
        match self {
            Ownership::Names(names) => names.iter().any(|n| n == chain),
            Ownership::Prefix(p) => chain.starts_with(p.as_str()),
        }
    }
}

/// One owner's desired state in one table of one family.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TablePlan {
    pub family: Family,
    pub table: Table,
    pub owns: Vec<Ownership>,
    /// Marks this owner's rules in built-in chains: a substring of the
    /// comment of every [`Jump`] rule, e.g. `ipwarden:services`.
    pub tag: String,
    pub chains: Vec<Chain>,
    pub jumps: Vec<Jump>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{table} chain {chain}: not owned by this plan (owner tag {tag})")]
    NotOwned {
        table: Table,
        chain: String,
        tag: String,
    },
    #[error("{table} rule in {from}: jump rule {rule:?} lacks the owner tag {tag:?} (or, placed first, ipwarden:first)")]
    Untagged {
        table: Table,
        from: String,
        rule: String,
        tag: String,
    },
    #[error("{table} chain {chain}: name longer than 28 characters")]
    NameTooLong { table: Table, chain: String },
}

impl TablePlan {
    pub fn owns(&self, chain: &str) -> bool {
        self.owns.iter().any(|o| o.owns(chain))
    }

    /// Checks that every chain is ours and every jump is tagged, so the
    /// applier cannot be asked to touch somebody else's objects.
    pub fn validate(&self) -> Result<(), PlanError> {
        for c in &self.chains {
            if !self.owns(&c.name) {
                return Err(PlanError::NotOwned {
                    table: self.table,
                    chain: c.name.clone(),
                    tag: self.tag.clone(),
                });
            }
            // XT_EXTENSION_MAXNAMELEN is 29 including the NUL.
            if c.name.len() > 28 {
                return Err(PlanError::NameTooLong {
                    table: self.table,
                    chain: c.name.clone(),
                });
            }
        }
        for j in &self.jumps {
            if !j.rule.contains(&self.tag)
                || (j.place == Place::First && !j.rule.contains(FIRST_TAG))
            {
                return Err(PlanError::Untagged {
                    table: self.table,
                    from: j.from.clone(),
                    rule: j.rule.clone(),
                    tag: self.tag.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Lines moved inside one of our chains (a partial write, see
/// `kernel/iptables/partial.rs`): `delete` by rule text first,
/// then `insert` at 1-based positions of the final chain, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainEdit {
    pub chain: String,
    pub delete: Vec<String>,
    pub insert: Vec<(usize, String)>,
}

impl ChainEdit {
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.insert.is_empty()
    }
}

/// The chain changes of one table and family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainDelta {
    pub family: Family,
    pub table: Table,
    /// Chains created, or flushed and refilled.
    pub written: Vec<Chain>,
    /// Lines moved in chains that stay.
    pub edits: Vec<ChainEdit>,
    /// Chains flushed and deleted (after every edit and write, so nothing
    /// references them any more).
    pub deleted: Vec<String>,
}

impl Default for ChainDelta {
    fn default() -> Self {
        Self {
            family: Family::V4,
            table: Table::Filter,
            written: Vec::new(),
            edits: Vec::new(),
            deleted: Vec::new(),
        }
    }
}

impl ChainDelta {
    pub fn is_empty(&self) -> bool {
        self.written.is_empty() && self.edits.is_empty() && self.deleted.is_empty()
    }
}
