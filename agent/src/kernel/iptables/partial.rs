//! A partial chain write: only the named chains and rules, in one
//! `iptables-restore --noflush` call, with no read of the table. The
//! caller knows what the kernel holds (what its last apply wrote; a full
//! apply repairs drift), so positions come from its own state. A rule to
//! delete that is not there fails the whole script and changes nothing:
//! the caller then falls back to a full apply.

use std::fmt::Write;

use super::{
    apply::{lock, restore, IptablesError},
    Changes,
};
use crate::desired::ChainDelta;

/// The restore script of `delta` (pure, for tests and logs).
pub(super) fn script(delta: &ChainDelta) -> String {
    let mut declare = String::new();
    let mut body = String::new();
    for chain in &delta.written {
        // With --noflush, declaring a chain creates it or flushes it.
        let _ = writeln!(declare, ":{} - [0:0]", chain.name);
        for rule in &chain.rules {
            let _ = writeln!(body, "-A {} {rule}", chain.name);
        }
    }
    for e in &delta.edits {
        for rule in &e.delete {
            let _ = writeln!(body, "-D {} {rule}", e.chain);
        }
        for (at, rule) in &e.insert {
            let _ = writeln!(body, "-I {} {at} {rule}", e.chain);
        }
    }
    for name in &delta.deleted {
        let _ = writeln!(declare, ":{name} - [0:0]");
        let _ = writeln!(body, "-X {name}");
    }
    format!("*{}\n{declare}{body}COMMIT\n", delta.table)
}

/// What the script of `delta` changes, as a full apply reports it.
pub fn changes(delta: &ChainDelta) -> Changes {
    Changes {
        chains_written: delta.written.iter().map(|c| c.name.clone()).collect(),
        chains_deleted: delta.deleted.clone(),
        jumps_rewritten: delta.edits.iter().map(|e| e.chain.clone()).collect(),
    }
}

/// Writes `delta` in one `iptables-restore --noflush` call, under the same
/// lock as full applies of its table (both controllers write the filter table).
pub fn apply_partial(delta: &ChainDelta) -> Result<Changes, IptablesError> {
    if delta.is_empty() {
        return Ok(Changes::default());
    }
    let _one_at_a_time = lock(delta.family, delta.table);
    restore(delta.family, delta.table, &script(delta))?;
    Ok(changes(delta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Chain, ChainEdit};

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
            script(&delta),
            "*filter\n:IPW-POD-FW-A - [0:0]\n:IPW-POD-FW-B - [0:0]\n-A IPW-POD-FW-A -j RETURN\n\
             -D IPWARDEN-FORWARD -d 10.0.0.9/32 -j IPW-POD-FW-B\n\
             -I IPWARDEN-FORWARD 2 -d 10.0.0.1/32 -j IPW-POD-FW-A\n-X IPW-POD-FW-B\nCOMMIT\n"
        );
    }
}
