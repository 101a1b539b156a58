//! The seam between where the cluster comes from and the loop that acts on
//! it: a [`Source`] keeps the cluster's current content and tells the loop,
//! through [`Change`]s on a channel the loop owns, when to take a new
//! [`Snapshot`].
//!
//! Two rules hold for every source:
//! - **Never act on a cold cache.** `snapshot()` is `None` until every kind
//!   has been read once, and [`Change::Ready`] is sent exactly then.
//! - **A failure never shrinks the desired state.** A list that errors or a
//!   file that does not parse leaves the last good content of that resource
//!   in force; the failure is logged, counted and reported by
//!   [`Source::failing`] (and a [`Change::Health`]) until it clears.

use crate::locks::LockOrRecover;
use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex},
};

use super::{HostInfo, Snapshot};

/// The kinds the controllers read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Service,
    EndpointSlice,
    Pod,
    Namespace,
    NetworkPolicy,
    Node,
    /// Optional: its CRD may not be installed (see [`Kind::REQUIRED`]).
    ClusterNetworkPolicy,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::Namespace,
        Kind::NetworkPolicy,
        Kind::Node,
        Kind::ClusterNetworkPolicy,
    ];

    /// The kinds every cluster has; a source is ready when these have
    /// listed. `ClusterNetworkPolicy` is a CRD that may be absent.
    pub const REQUIRED: [Kind; 6] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::Namespace,
        Kind::NetworkPolicy,
        Kind::Node,
    ];

    /// The API resource, as RBAC and error messages name it.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices.discovery.k8s.io",
            Kind::Pod => "pods",
            Kind::Namespace => "namespaces",
            Kind::NetworkPolicy => "networkpolicies.networking.k8s.io",
            Kind::Node => "nodes",
            Kind::ClusterNetworkPolicy => "clusternetworkpolicies.policy.networking.k8s.io",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What a source tells the loop. Sent on a tokio mpsc channel the loop owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Every kind has finished its first list: snapshots are now complete.
    Ready,
    /// One object was added, edited or deleted (after Ready).
    Object {
        kind: Kind,
        namespace: Option<String>,
        name: String,
    },
    /// A kind was listed again after a watch gap (objects deleted meanwhile
    /// are gone from the store now): the loop does a full sync.
    Relisted(Kind),
    /// A source failed (list error, unreadable file) or recovered; the last
    /// good content stays in force.
    Health {
        resource: String,
        error: Option<String>,
    },
}

/// A running source: kube reflectors or the manifests folder.
pub trait Source: Send + Sync {
    /// The cluster now, or None while any kind has not finished its first
    /// list (never act on a cold cache).
    fn snapshot(&self, host: &HostInfo) -> Option<Snapshot>;

    /// Resources currently failing, with the error, for /metrics and /healthz.
    fn failing(&self) -> Vec<(String, String)> {
        self.health()
            .into_iter()
            .filter_map(|h| Some((h.resource, h.error?)))
            .collect()
    }

    /// Every resource the source has reported on, with its counters, for
    /// /metrics (`failures` and `skipped_objects` are counters since start,
    /// `error.is_some()` a gauge).
    fn health(&self) -> Vec<ResourceHealth>;

    /// Has every resource completed its first list (or read)?
    fn listed(&self) -> bool;

    /// Objects that cannot be read now, and what stands in for each.
    fn unreadable(&self) -> Vec<super::unreadable::Unreadable> {
        Vec::new()
    }
}

/// The health of one resource (a kind of the API server, or a manifest file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceHealth {
    pub resource: String,
    /// The current failure, until the resource reads again.
    pub error: Option<String>,
    /// Failures since start (each failed list, watch or read counts one).
    pub failures: u64,
    /// Objects skipped because they did not deserialize, since start.
    pub skipped_objects: u64,
    /// Its first list (or read) completed; until then `status` says it is
    /// waiting.
    pub listed: bool,
    /// Reads that shrank a manifests file and were held at its last good
    /// content, since start.
    pub held_shrinks: u64,
}

/// The health book a source keeps, shared by its tasks. Transitions (failing
/// to healthy and back) are sent as [`Change::Health`].
#[derive(Clone, Debug)]
pub(crate) struct HealthBook {
    inner: Arc<Mutex<BTreeMap<String, ResourceHealth>>>,
    logged: Arc<Mutex<BTreeMap<String, Logged>>>,
    changes: tokio::sync::mpsc::UnboundedSender<Change>,
}

/// What the log has said of a resource: one line when it starts failing,
/// one when it recovers, a reminder at most once a minute in between.
#[derive(Debug, Default)]
struct Logged {
    ever_read: bool,
    failing_since_logged: Option<std::time::Instant>,
}

/// Between two reminders that a resource still fails.
const REMIND_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl HealthBook {
    pub fn new(changes: tokio::sync::mpsc::UnboundedSender<Change>) -> Self {
        Self {
            inner: Arc::default(),
            logged: Arc::default(),
            changes,
        }
    }

    /// Registers a resource, so it shows in [`Source::health`] from the start.
    pub fn register(&self, resource: &str) {
        self.update(resource, |_| ());
    }

    /// Runs `f` on the resource's entry (created when new) under the lock.
    fn update<T>(&self, resource: &str, f: impl FnOnce(&mut ResourceHealth) -> T) -> T {
        let mut book = self.inner.lock_or_recover();
        let entry = book
            .entry(resource.to_string())
            .or_insert_with(|| ResourceHealth {
                resource: resource.to_string(),
                ..ResourceHealth::default()
            });
        f(entry)
    }

    /// Forgets a resource (a manifest file that was removed).
    pub fn forget(&self, resource: &str) {
        let removed = self.inner.lock_or_recover().remove(resource);
        if removed.is_some_and(|h| h.error.is_some()) {
            let _ = self.changes.send(Change::Health {
                resource: resource.to_string(),
                error: None,
            });
        }
    }

    /// Records a failure: logged and counted every time, sent to the loop
    /// when the resource was healthy before (or the error changed).
    pub fn failed(&self, resource: &str, error: String) {
        let send = self.update(resource, |h| {
            h.failures += 1;
            let send = h.error.as_deref() != Some(error.as_str());
            h.error = Some(error.clone());
            send
        });
        self.log_failure(resource, &error, send);
        if send {
            let _ = self.changes.send(Change::Health {
                resource: resource.to_string(),
                error: Some(error),
            });
        }
    }

    /// Records a success: clears the failure, if any, and tells the loop.
    pub fn ok(&self, resource: &str) {
        let cleared = {
            let mut book = self.inner.lock_or_recover();
            match book.get_mut(resource) {
                Some(h) => h.error.take().is_some(),
                None => {
                    book.insert(
                        resource.to_string(),
                        ResourceHealth {
                            resource: resource.to_string(),
                            ..ResourceHealth::default()
                        },
                    );
                    false
                }
            }
        };
        let mut logged = self.logged.lock_or_recover();
        let l = logged.entry(resource.to_string()).or_default();
        l.ever_read = true;
        l.failing_since_logged = None;
        drop(logged);
        if cleared {
            tracing::info!(resource, "{resource} reads again");
            let _ = self.changes.send(Change::Health {
                resource: resource.to_string(),
                error: None,
            });
        }
    }

    /// Logs a failure when it is new (or its error changed), else at most
    /// once a minute.
    fn log_failure(&self, resource: &str, error: &str, new: bool) {
        let mut logged = self.logged.lock_or_recover();
        let l = logged.entry(resource.to_string()).or_default();
        let now = std::time::Instant::now();
        let due = l
            .failing_since_logged
            .is_none_or(|at| now.duration_since(at) >= REMIND_EVERY);
        if !(new || due) {
            return;
        }
        l.failing_since_logged = Some(now);
        let kept = if l.ever_read {
            format!("the last good content of {resource} stays in force")
        } else {
            format!("{resource} was never read: nothing of it is in force yet")
        };
        let again = if new { "" } else { "still failing: " };
        tracing::warn!(resource, "{again}{error}; {kept}");
    }

    /// Records that a resource completed a list (or a whole read).
    pub fn listed(&self, resource: &str) {
        self.update(resource, |h| h.listed = true);
    }

    /// Counts a read held at the file's last good content.
    pub fn held(&self, resource: &str) {
        self.update(resource, |h| h.held_shrinks += 1);
    }

    /// Counts an object that was skipped (it did not deserialize).
    pub fn skipped(&self, resource: &str) {
        self.update(resource, |h| h.skipped_objects += 1);
    }

    pub fn snapshot(&self) -> Vec<ResourceHealth> {
        self.inner.lock_or_recover().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_transitions_are_sent_once_and_failures_counted_every_time() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let book = HealthBook::new(tx);
        book.register("services");
        book.ok("services");
        assert!(rx.try_recv().is_err(), "no change while healthy");
        book.failed("services", "403 Forbidden".into());
        book.failed("services", "403 Forbidden".into());
        assert_eq!(
            rx.try_recv().unwrap(),
            Change::Health {
                resource: "services".into(),
                error: Some("403 Forbidden".into())
            }
        );
        assert!(rx.try_recv().is_err(), "the same error is sent once");
        let h = &book.snapshot()[0];
        assert_eq!((h.failures, h.error.is_some()), (2, true));
        book.ok("services");
        assert_eq!(
            rx.try_recv().unwrap(),
            Change::Health {
                resource: "services".into(),
                error: None
            }
        );
        let h = &book.snapshot()[0];
        assert_eq!((h.failures, h.error.is_some()), (2, false));
    }
}
