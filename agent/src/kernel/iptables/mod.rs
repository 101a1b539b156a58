//! iptables through `iptables-restore --noflush`: only the chains we own and
//! the jump rules we put into built-in chains are ever written; rules of
//! other programs, and their order, stay as they are.
//!
//! A [`TablePlan`](crate::desired::TablePlan) (desired/iptables.rs) is the
//! desired state of one owner in one table and family. Applying it reads
//! the table (`iptables-save -t`), renders a restore script that changes
//! only what differs ([`render::script`], pure), runs it in one
//! `iptables-restore` call (atomic per table), and reads back. A
//! [`ChainDelta`] (partial.rs) writes only named chains and lines, without
//! reading the table: the policy controller's partial syncs. The family
//! picks the commands (`save_cmd`, `restore_cmd`), privately.

mod apply;
mod counters;
mod generation;
mod nft_rules;
mod partial;
mod render;
mod saved;
mod switch;

pub use apply::{apply, read_table, IptablesError, Report};
pub use counters::{comment_counters, comment_counters_from_save};
pub use partial::{apply_partial, changes as partial_changes, script as partial_script};
pub use render::{script, Changes};
pub use saved::SavedTable;
pub use switch::switch_set_references;

use crate::desired::Family;

/// `iptables-save` or `ip6tables-save`.
fn save_cmd(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables-save",
        Family::V6 => "ip6tables-save",
    }
}

/// `iptables-restore` or `ip6tables-restore`.
fn restore_cmd(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables-restore",
        Family::V6 => "ip6tables-restore",
    }
}
