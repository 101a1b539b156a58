//! iptables through `iptables-restore --noflush`: only the chains we own and
//! the jump rules we put into built-in chains are ever written; rules of
//! other programs, and their order, stay as they are.
//!
//! A [`TablePlan`](crate::desired::TablePlan) (desired/iptables.rs) is the
//! desired state of one owner in one table and family. Applying it reads
//! the table (`iptables-save -t`), renders a restore script that changes
//! only what differs ([`render::script`], pure), runs it in one
//! `iptables-restore` call (atomic per table), and reads back (unless
//! the owner trusts a restore no other commit raced: [`ReadBack`]);
//! [`apply_all_with`] does that for several tables at once. A
//! [`ChainDelta`] (partial.rs) writes only named chains and lines, without
//! reading the table: the policy controller's partial syncs. The family
//! picks the commands of the backend the node uses (backend.rs: nft or
//! legacy).

mod apply;
pub(crate) mod backend;
mod counters;
mod generation;
mod nft_rules;
mod partial;
mod render;
mod saved;
mod split;
mod switch;
mod together;

pub use apply::{
    apply, apply_with, read_table, untouched_since_verified, IptablesError, ReadBack, Report,
};
pub use counters::{comment_counters, comment_counters_from_save};
pub use partial::{apply_partial, changes as partial_changes};
pub use render::{script, Changes};
pub use saved::SavedTable;
pub use switch::switch_set_references;
pub use together::apply_all_with;

/// Is the backend in force nf_tables (whose generation and rule counters
/// netlink reads)?
fn nft_backend() -> bool {
    backend::current().backend == backend::Backend::Nft
}
