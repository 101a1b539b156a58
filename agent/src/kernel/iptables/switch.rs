//! Re-pointing rules from one ipset to another, for make-before-break
//! replacement of a set: the kernel refuses to rename, swap (across types)
//! or destroy a set that a rule references, so the rules move first.

use super::{
    apply::{read_table, restore},
    backend, IptablesError,
};
use crate::desired::{Family, Table};

/// Rewrites, in place (`-R`), every rule of every table and both families
/// that matches set `from`, to match `to`; returns how many moved. One
/// `iptables-restore` per table, so each table switches atomically.
pub fn switch_set_references(from: &str, to: &str) -> Result<usize, IptablesError> {
    let needle = format!("--match-set {from} ");
    let replacement = format!("--match-set {to} ");
    let mut moved = 0;
    for family in Family::ALL {
        for table in [Table::Filter, Table::Nat, Table::Mangle, Table::Raw] {
            if !backend::table_exists(backend::current().backend, family, &table.to_string()) {
                continue; // Absent: no reference to move, and a read would create it.
            }
            let saved = read_table(family, table)?;
            let mut script = String::new();
            for (chain, rules) in &saved.chains {
                for (i, rule) in rules.iter().enumerate() {
                    if rule.contains(&needle) {
                        let new = rule.replace(&needle, &replacement);
                        script.push_str(&format!("-R {chain} {} {new}\n", i + 1));
                        moved += 1;
                    }
                }
            }
            if !script.is_empty() {
                restore(family, table, &format!("*{table}\n{script}COMMIT\n"))?;
            }
        }
    }
    Ok(moved)
}
