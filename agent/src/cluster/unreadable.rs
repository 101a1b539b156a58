//! Objects that cannot be read: never more open than before the bad edit.
//!
//! An object whose name is known but whose body does not deserialize (a
//! field of the wrong type) is, per object (kind, namespace, name):
//! - kept at its last good version, when the source had one;
//! - for a NetworkPolicy never read, replaced by a stand-in under the same
//!   name that denies everything (`podSelector: {}`, both policy types, no
//!   rules): the pods of its namespace are isolated both ways until it
//!   reads, as the policy could have selected any of them;
//! - any other kind never read is left out (a new Service is simply not
//!   programmed).
//!
//! Each one is reported (log, `Change::Health` under the object's name,
//! `ipwarden_unreadable_objects{kind}`, `ipwarden status`) until it reads.

use crate::locks::LockOrRecover;
use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex},
};

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Node, ObjectReference, Pod, Service},
        discovery::v1::EndpointSlice,
        networking::v1::{NetworkPolicy, NetworkPolicySpec},
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use tokio::sync::mpsc::UnboundedSender;

use super::{
    events::{EventPoster, Warning},
    source::Change,
    Kind, KubeObject,
};

/// One object that cannot be read, and what stands in for it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unreadable {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
    /// The failing field and why ("field spec.ingress[0].ports[0].port: ...").
    pub error: String,
    pub stand_in: StandIn,
}

/// What is in force while an object cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StandIn {
    LastGood,
    DenyAll,
    Nothing,
}

impl Unreadable {
    /// "NetworkPolicy shop/allow-web", as logs and `status` name it.
    pub fn object(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

impl StandIn {
    /// What the agent did, as an Event's action.
    pub fn action(self) -> &'static str {
        match self {
            StandIn::LastGood => "KeepLastGood",
            StandIn::DenyAll => "DenyAll",
            StandIn::Nothing => "Skip",
        }
    }
}

impl fmt::Display for StandIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StandIn::LastGood => "its last good version stays in force",
            StandIn::DenyAll => "it was never read: its namespace's pods are isolated both ways",
            StandIn::Nothing => "it was never read: it is not programmed",
        })
    }
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cannot be read ({}); {}",
            self.object(),
            self.error,
            self.stand_in
        )
    }
}

/// A NetworkPolicy that isolates every pod of `namespace` both ways and
/// allows nothing.
pub fn deny_all(namespace: &str, name: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: None,
            egress: None,
        }),
    }
}

/// What stands in for an object of this type that was never read.
pub trait NeverRead: Sized {
    fn never_read(_meta: &ObjectMeta) -> Option<Self> {
        None
    }
}

impl NeverRead for NetworkPolicy {
    fn never_read(meta: &ObjectMeta) -> Option<Self> {
        Some(deny_all(meta.namespace.as_deref()?, meta.name.as_deref()?))
    }
}
impl NeverRead for Service {}
impl NeverRead for EndpointSlice {}
impl NeverRead for Pod {}
impl NeverRead for Namespace {}
impl NeverRead for Node {}
/// A ClusterNetworkPolicy never read is left out (and reported): which
/// pods it was meant for is unknown.
impl NeverRead for super::cnp::ClusterNetworkPolicy {}

/// The stand-in for a manifest object never read.
pub fn never_read_object(kind: Kind, meta: &ObjectMeta) -> Option<KubeObject> {
    match kind {
        Kind::NetworkPolicy => {
            NetworkPolicy::never_read(meta).map(|p| KubeObject::NetworkPolicy(Box::new(p)))
        }
        _ => None,
    }
}

type Key = (Kind, Option<String>, String);

/// The objects of a source that cannot be read now. Transitions are logged
/// and sent as [`Change::Health`] under the object's name.
#[derive(Clone)]
pub struct UnreadableBook {
    inner: Arc<Mutex<BTreeMap<Key, Unreadable>>>,
    changes: UnboundedSender<Change>,
    events: Option<EventPoster>,
}

impl UnreadableBook {
    pub fn new(changes: UnboundedSender<Change>) -> Self {
        Self {
            inner: Arc::default(),
            changes,
            events: None,
        }
    }

    /// Also posts a Warning Event on each object as it is reported (the
    /// API server source).
    pub fn with_events(self, events: EventPoster) -> Self {
        Self {
            events: Some(events),
            ..self
        }
    }

    /// Records `u`; reported when it is new or its error changed. Returns
    /// whether it was.
    pub fn set(&self, u: Unreadable) -> bool {
        let key = (u.kind, u.namespace.clone(), u.name.clone());
        let mut book = self.inner.lock_or_recover();
        if book.get(&key) == Some(&u) {
            return false;
        }
        tracing::error!("{u}");
        let _ = self.changes.send(Change::Health {
            resource: u.object(),
            error: Some(format!("cannot be read ({}); {}", u.error, u.stand_in)),
        });
        book.insert(key, u);
        true
    }

    /// [`UnreadableBook::set`], and a Warning Event on `regarding` when
    /// reported, naming the field.
    pub fn set_regarding(&self, u: Unreadable, regarding: ObjectReference) {
        let warning = self.events.as_ref().map(|_| Warning {
            regarding,
            reason: "Unreadable",
            action: u.stand_in.action(),
            note: u.to_string(),
        });
        if self.set(u) {
            if let (Some(events), Some(w)) = (&self.events, warning) {
                events.warn(w);
            }
        }
    }

    /// The object reads again (or is gone).
    pub fn clear(&self, kind: Kind, namespace: Option<&str>, name: &str) {
        let key = (kind, namespace.map(str::to_string), name.to_string());
        let Some(u) = self.inner.lock_or_recover().remove(&key) else {
            return;
        };
        tracing::info!("{} reads again", u.object());
        let _ = self.changes.send(Change::Health {
            resource: u.object(),
            error: None,
        });
    }

    /// Replaces the whole book (a source that re-reads everything).
    pub fn replace(&self, now: Vec<Unreadable>) {
        let gone: Vec<Key> = {
            let book = self.inner.lock_or_recover();
            book.keys()
                .filter(|k| {
                    !now.iter()
                        .any(|u| (u.kind, &u.namespace, &u.name) == (k.0, &k.1, &k.2))
                })
                .cloned()
                .collect()
        };
        for (kind, ns, name) in gone {
            self.clear(kind, ns.as_deref(), &name);
        }
        for u in now {
            self.set(u);
        }
    }

    pub fn list(&self) -> Vec<Unreadable> {
        self.inner.lock_or_recover().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(name: &str, stand_in: StandIn) -> Unreadable {
        Unreadable {
            kind: Kind::NetworkPolicy,
            namespace: Some("shop".into()),
            name: name.into(),
            error: "field spec.ingress[0].ports[0].port: invalid type: map".into(),
            stand_in,
        }
    }

    #[test]
    fn a_deny_all_stand_in_selects_every_pod_both_ways_and_allows_nothing() {
        let p = NetworkPolicy::never_read(&ObjectMeta {
            name: Some("allow-web".into()),
            namespace: Some("shop".into()),
            ..ObjectMeta::default()
        })
        .unwrap();
        let spec = p.spec.unwrap();
        assert_eq!(spec.pod_selector, Some(LabelSelector::default()));
        assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"]);
        assert!(spec.ingress.is_none() && spec.egress.is_none());
        assert!(Service::never_read(&ObjectMeta::default()).is_none());
    }

    #[test]
    fn transitions_are_reported_once_each() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let book = UnreadableBook::new(tx);
        book.set(bad("a", StandIn::DenyAll));
        book.set(bad("a", StandIn::DenyAll));
        let Change::Health { resource, error } = rx.try_recv().unwrap() else {
            panic!()
        };
        assert_eq!(resource, "NetworkPolicy shop/a");
        assert!(error.unwrap().contains("spec.ingress[0].ports[0].port"));
        assert!(rx.try_recv().is_err(), "the same problem is sent once");
        book.replace(vec![bad("b", StandIn::LastGood)]);
        let sent: Vec<Change> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(
            sent[0],
            Change::Health {
                resource: "NetworkPolicy shop/a".into(),
                error: None
            }
        );
        assert_eq!(book.list().len(), 1);
    }
}
