//! iptables through `iptables-restore --noflush`: only the chains we own and
//! the jump rules we put into built-in chains are ever written; rules of
//! other programs, and their order, stay as they are.
//!
//! A [`TablePlan`] is the desired state of one owner in one table and
//! family. Applying it reads the table (`iptables-save -t`), renders a
//! restore script that changes only what differs ([`render::script`], pure),
//! runs it in one `iptables-restore` call (atomic per table), and reads back.

mod apply;
mod plan;
mod render;
mod saved;
mod switch;

pub use apply::{apply, read_table, IptablesError, Report};
pub use plan::{Chain, Family, Jump, Ownership, PlanError, Table, TablePlan};
pub use render::{script, Changes};
pub use saved::SavedTable;
pub use switch::switch_set_references;
