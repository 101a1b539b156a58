//! What the running agent knows, for `ipwarden status` and `explain`: each
//! controller's last syncs, the last desired state of each, the objects
//! watched and the eBPF attachments. Written by the workers and the
//! observer, read by the API layer (`/state`).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use super::services::ServicesView;
use crate::controllers::policies::PolicyState;

/// One sync, as `status` shows it.
#[derive(Clone, Debug)]
pub struct SyncRecord {
    pub at: SystemTime,
    pub duration: Duration,
    pub summary: String,
}

#[derive(Clone, Debug, Default)]
pub struct ControllerStatus {
    pub last_full: Option<SyncRecord>,
    pub last_partial: Option<SyncRecord>,
    pub last_error: Option<String>,
    pub syncs: u64,
    pub failures: u64,
}

/// The eBPF data plane as the service worker last saw it.
#[derive(Clone, Debug, Default)]
pub struct BpfStatus {
    pub mode: String,
    pub interfaces: BTreeSet<String>,
}

#[derive(Clone, Debug, Default)]
pub struct BoardState {
    pub services: Option<ServicesView>,
    pub policies: Option<Arc<PolicyState>>,
    pub controllers: BTreeMap<&'static str, ControllerStatus>,
    /// Objects of each kind in the last snapshot.
    pub objects: BTreeMap<String, usize>,
    pub bpf: Option<BpfStatus>,
    /// Set drift the auditor found, and how much of it was healed.
    pub drift_found: u64,
    pub drift_healed: u64,
    /// The source's resources (API kinds, manifest files, unreadable
    /// objects) failing now, with why.
    pub source_problems: BTreeMap<String, String>,
}

/// Shared and cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Board {
    inner: Arc<RwLock<BoardState>>,
}

impl Board {
    pub fn read(&self) -> BoardState {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut BoardState)) {
        f(&mut self.inner.write().unwrap_or_else(|p| p.into_inner()));
    }
}
