//! A partial chain write: only the named chains and rules, in one
//! `iptables-restore --noflush` call, with no read of the table. The
//! caller knows what the kernel holds (what its last apply wrote; a full
//! apply repairs drift), so positions come from its own state. A rule to
//! delete that is not there fails the whole script and changes nothing:
//! the caller then falls back to a full apply.

use std::fmt::Write;

use super::{
    apply::{restore, IptablesError, APPLY},
    Changes,
};
use crate::desired::{Chain, Family, Table};

/// Lines moved inside one of our chains: `delete` by rule text first,
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

    /// The restore script (pure, for tests and logs).
    pub fn script(&self) -> String {
        let mut declare = String::new();
        let mut body = String::new();
        for chain in &self.written {
            // With --noflush, declaring a chain creates it or flushes it.
            let _ = writeln!(declare, ":{} - [0:0]", chain.name);
            for rule in &chain.rules {
                let _ = writeln!(body, "-A {} {rule}", chain.name);
            }
        }
        for e in &self.edits {
            for rule in &e.delete {
                let _ = writeln!(body, "-D {} {rule}", e.chain);
            }
            for (at, rule) in &e.insert {
                let _ = writeln!(body, "-I {} {at} {rule}", e.chain);
            }
        }
        for name in &self.deleted {
            let _ = writeln!(declare, ":{name} - [0:0]");
            let _ = writeln!(body, "-X {name}");
        }
        format!("*{}\n{declare}{body}COMMIT\n", self.table)
    }

    /// What the script changes, as a full apply reports it.
    pub fn changes(&self) -> Changes {
        Changes {
            chains_written: self.written.iter().map(|c| c.name.clone()).collect(),
            chains_deleted: self.deleted.clone(),
            jumps_rewritten: self.edits.iter().map(|e| e.chain.clone()).collect(),
        }
    }
}

/// Writes `delta` in one `iptables-restore --noflush` call, under the same
/// lock as full applies (both controllers write the filter table).
pub fn apply_partial(delta: &ChainDelta) -> Result<Changes, IptablesError> {
    if delta.is_empty() {
        return Ok(Changes::default());
    }
    let _one_at_a_time = APPLY.lock().unwrap_or_else(|p| p.into_inner());
    restore(delta.family, delta.table, &delta.script())?;
    Ok(delta.changes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_writes_then_edits_then_deletes() {
        let delta = ChainDelta {
            written: vec![Chain {
                name: "IPW-POD-FW-A".into(),
                rules: vec!["-j RETURN".into()],
            }],
            edits: vec![ChainEdit {
                chain: "IPWARDEN-FORWARD".into(),
                delete: vec!["-d 10.0.0.9/32 -j IPW-POD-FW-B".into()],
                insert: vec![(2, "-d 10.0.0.1/32 -j IPW-POD-FW-A".into())],
            }],
            deleted: vec!["IPW-POD-FW-B".into()],
            ..ChainDelta::default()
        };
        assert_eq!(
            delta.script(),
            "*filter\n:IPW-POD-FW-A - [0:0]\n:IPW-POD-FW-B - [0:0]\n-A IPW-POD-FW-A -j RETURN\n\
             -D IPWARDEN-FORWARD -d 10.0.0.9/32 -j IPW-POD-FW-B\n\
             -I IPWARDEN-FORWARD 2 -d 10.0.0.1/32 -j IPW-POD-FW-A\n-X IPW-POD-FW-B\nCOMMIT\n"
        );
    }
}
