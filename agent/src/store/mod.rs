//! The set store: the one path through which every ipset change goes.
//!
//! Owners register the sets they own; `apply(owner, sets)` replaces that
//! owner's desired state and, under one lock, reads what the kernel holds
//! (save), diffs ([`diff::plan`]) and writes only the difference (apply).

pub mod diff;
pub mod owners;
