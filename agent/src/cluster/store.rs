//! A kind's objects kept in (namespace, name) order as watch events
//! arrive, so that a snapshot shares the store's lists, never a sort of
//! the whole cluster on every sync, nor a copy of it.
//!
//! Objects sit behind `Arc`s in one sorted `Vec` (8 bytes each, no key
//! copied beside the object: a lookup is a binary search on the object's
//! own metadata). The `Vec` itself is shared with the snapshots taken
//! ([`List`]): an event copies it only when a snapshot still holds it,
//! once per snapshot and changed kind, so a sync that reads one Service
//! does not pay for copying 10k. A kind whose objects belong to a group (an EndpointSlice
//! to its Service, [`Grouped`]) keeps a second list in (namespace, group,
//! name) order, maintained on each event too. A (re)list fills a buffer
//! that replaces the content only when complete, so a relist never shows
//! an empty or partial kind.

use crate::locks::RwLockOrRecover;
use std::{
    cmp::Ordering,
    sync::{Arc, RwLock},
};

use k8s_openapi::api::{
    core::v1::{Namespace, Node},
    networking::v1::NetworkPolicy,
};
use kube::runtime::watcher;

use super::{
    cnp::ClusterNetworkPolicy,
    compact::{EndpointSlice, Pod, Service, Stored},
    slice_service, HostInfo, List, Snapshot,
};

/// The group an object belongs to, for the kinds read by group (the
/// Service an EndpointSlice serves); `None` for the rest.
pub trait Grouped {
    fn group(&self) -> Option<(&str, &str)> {
        None
    }
}

impl Grouped for EndpointSlice {
    fn group(&self) -> Option<(&str, &str)> {
        slice_service(self)
    }
}

impl Grouped for Service {}
impl Grouped for Pod {}
impl Grouped for Namespace {}
impl Grouped for NetworkPolicy {}
impl Grouped for Node {}
impl Grouped for ClusterNetworkPolicy {}

/// One store per kind the controllers read (adding a kind is a field here
/// and in [`Snapshot`]). Clones share.
#[derive(Clone, Default)]
pub struct Stores {
    pub services: Ordered<Service>,
    pub endpoint_slices: Ordered<EndpointSlice>,
    pub pods: Ordered<Pod>,
    pub namespaces: Ordered<Namespace>,
    pub network_policies: Ordered<NetworkPolicy>,
    pub nodes: Ordered<Node>,
    /// Empty while its CRD is absent.
    pub cluster_network_policies: Ordered<ClusterNetworkPolicy>,
}

impl Stores {
    /// The stores' lists, shared: no object and no list is copied, nothing
    /// is sorted. The Node kept is the one named `host.node_name`.
    pub fn snapshot(&self, host: &HostInfo) -> Snapshot {
        let node = self.nodes.get(None, &host.node_name);
        Snapshot {
            services: self.services.all(),
            endpoint_slices: self.endpoint_slices.all(),
            slices_by_service: self.endpoint_slices.all_by_group(),
            pods: self.pods.all(),
            namespaces: self.namespaces.all(),
            network_policies: self.network_policies.all(),
            cluster_network_policies: self.cluster_network_policies.all(),
            node,
            host: host.clone(),
        }
    }
}

/// What an event did to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A (re)list completed: the content was replaced.
    Listed,
    /// One object was added, edited or deleted.
    Changed,
    /// Nothing the store holds changed (an equal update, the delete of an
    /// object it does not hold, a list still in progress).
    Unchanged,
}

/// The objects of one kind, shared between the task that applies the
/// watch events and the loop that takes snapshots. Clones share.
pub struct Ordered<K> {
    lists: Arc<RwLock<Lists<K>>>,
}

impl<K> Clone for Ordered<K> {
    fn clone(&self) -> Self {
        Self {
            lists: self.lists.clone(),
        }
    }
}

impl<K> Default for Ordered<K> {
    fn default() -> Self {
        Self {
            lists: Arc::new(RwLock::new(Lists {
                by_name: List::default(),
                by_group: List::default(),
                relist: None,
            })),
        }
    }
}

struct Lists<K> {
    /// Sorted by (namespace, name).
    by_name: List<K>,
    /// The objects that have a group, sorted by (namespace, group, name).
    by_group: List<K>,
    /// A (re)list in progress.
    relist: Option<Vec<Arc<K>>>,
}

/// (namespace, name): no allocation per comparison.
fn by_name<K: Stored>(a: &K, b: &K) -> Ordering {
    a.key().cmp(&b.key())
}

/// (namespace, group, name), for the objects that have a group.
fn group_key<K: Stored + Grouped>(o: &K) -> Option<(&str, &str, &str)> {
    let (namespace, group) = o.group()?;
    Some((namespace, group, o.name()))
}

impl<K: Stored + Grouped> Ordered<K> {
    /// Applies one watch event (objects already trimmed and unguarded).
    pub fn apply(&self, event: watcher::Event<K>) -> Applied {
        let mut lists = self.lists.write_or_recover();
        match event {
            watcher::Event::Init => {
                lists.relist = Some(Vec::new());
                Applied::Unchanged
            }
            watcher::Event::InitApply(o) => {
                lists.relist.get_or_insert_default().push(Arc::new(o));
                Applied::Unchanged
            }
            watcher::Event::InitDone => {
                let listed = lists.relist.take().unwrap_or_default();
                lists.replace(listed);
                Applied::Listed
            }
            watcher::Event::Apply(o) => lists.upsert(o),
            watcher::Event::Delete(o) => lists.remove(&o),
        }
    }

    /// The object `namespace`/`name`, by binary search.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let lists = self.lists.read_or_recover();
        let want = (namespace.unwrap_or_default(), name);
        let i = lists
            .by_name
            .binary_search_by(|o| o.key().cmp(&want))
            .ok()?;
        Some(lists.by_name[i].clone())
    }

    /// Every object, in (namespace, name) order: the list shared.
    pub fn all(&self) -> List<K> {
        self.lists.read_or_recover().by_name.clone()
    }

    /// The objects that have a group, in (namespace, group, name) order.
    pub fn all_by_group(&self) -> List<K> {
        self.lists.read_or_recover().by_group.clone()
    }
}

impl<K: Stored + Grouped> Lists<K> {
    /// A complete (re)list: sorted once, the last of duplicate names kept.
    fn replace(&mut self, mut objects: Vec<Arc<K>>) {
        // Stable, then keep the last: a name listed twice is its latest.
        objects.sort_by(|a, b| by_name(&**a, &**b));
        objects.reverse();
        objects.dedup_by(|a, b| by_name(&**a, &**b) == Ordering::Equal);
        objects.reverse();
        let mut by_group: Vec<Arc<K>> = objects
            .iter()
            .filter(|o| o.group().is_some())
            .cloned()
            .collect();
        by_group.sort_by(|a, b| group_key(&**a).cmp(&group_key(&**b)));
        self.by_name = List::new(objects);
        self.by_group = List::new(by_group);
    }

    fn upsert(&mut self, o: K) -> Applied {
        let at = self.by_name.binary_search_by(|held| by_name(&**held, &o));
        if matches!(at, Ok(i) if *self.by_name[i] == o) {
            return Applied::Unchanged;
        }
        // Copies the list only if a snapshot still holds it.
        let list = self.by_name.make_mut();
        let o = match at {
            Ok(i) => {
                let old = std::mem::replace(&mut list[i], Arc::new(o));
                let new = list[i].clone();
                self.ungroup(&old);
                new
            }
            Err(i) => {
                list.insert(i, Arc::new(o));
                list[i].clone()
            }
        };
        if let Some(key) = group_key(&*o) {
            let at = self
                .by_group
                .partition_point(|held| group_key(&**held) < Some(key));
            self.by_group.make_mut().insert(at, o);
        }
        Applied::Changed
    }

    fn remove(&mut self, o: &K) -> Applied {
        let Ok(i) = self.by_name.binary_search_by(|held| by_name(&**held, o)) else {
            return Applied::Unchanged;
        };
        let old = self.by_name.make_mut().remove(i);
        self.ungroup(&old);
        Applied::Changed
    }

    /// Takes `old` (the very object held) out of the group order.
    fn ungroup(&mut self, old: &Arc<K>) {
        let Some(key) = group_key(&**old) else { return };
        let at = self
            .by_group
            .partition_point(|held| group_key(&**held) < Some(key));
        if self
            .by_group
            .get(at)
            .is_some_and(|held| Arc::ptr_eq(held, old))
        {
            self.by_group.make_mut().remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn slice(ns: &str, name: &str, service: &str, ip: u8) -> EndpointSlice {
        slice_k8s(ns, name, service, ip).into()
    }

    fn slice_k8s(
        ns: &str,
        name: &str,
        service: &str,
        ip: u8,
    ) -> k8s_openapi::api::discovery::v1::EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns,
                "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [format!("10.0.0.{ip}")]}]
        }))
        .unwrap()
    }

    fn names(list: &[Arc<EndpointSlice>]) -> Vec<String> {
        list.iter()
            .map(|s| {
                let (ns, name) = s.key();
                format!("{ns}/{name}")
            })
            .collect()
    }

    #[test]
    fn a_relist_replaces_the_content_only_when_complete() {
        let store = Ordered::<EndpointSlice>::default();
        store.apply(watcher::Event::Init);
        store.apply(watcher::Event::InitApply(slice("b", "x", "web", 1)));
        store.apply(watcher::Event::InitApply(slice("a", "y", "web", 1)));
        assert!(store.all().is_empty(), "nothing before InitDone");
        assert_eq!(store.apply(watcher::Event::InitDone), Applied::Listed);
        assert_eq!(names(&store.all()), ["a/y", "b/x"]);
        store.apply(watcher::Event::Init);
        store.apply(watcher::Event::InitApply(slice("c", "z", "web", 1)));
        assert_eq!(names(&store.all()), ["a/y", "b/x"], "the old content holds");
        store.apply(watcher::Event::InitDone);
        assert_eq!(names(&store.all()), ["c/z"]);
        assert_eq!(names(&store.all_by_group()), ["c/z"]);
    }

    #[test]
    fn an_equal_update_and_the_delete_of_an_unknown_object_change_nothing() {
        let store = Ordered::<EndpointSlice>::default();
        let s = slice("a", "x", "web", 1);
        assert_eq!(
            store.apply(watcher::Event::Apply(s.clone())),
            Applied::Changed
        );
        assert_eq!(store.apply(watcher::Event::Apply(s)), Applied::Unchanged);
        let other = slice("a", "nope", "web", 1);
        assert_eq!(
            store.apply(watcher::Event::Delete(other)),
            Applied::Unchanged
        );
        let moved = slice("a", "x", "web", 2);
        assert_eq!(store.apply(watcher::Event::Apply(moved)), Applied::Changed);
        assert_eq!(store.all().len(), 1);
        assert_eq!(store.all_by_group().len(), 1);
        let held = store.get(Some("a"), "x").unwrap();
        assert_eq!(&*held.endpoints[0].addresses[0], "10.0.0.2");
    }

    #[test]
    fn a_snapshot_keeps_what_it_was_taken_with_while_the_store_moves_on() {
        let stores = Stores::default();
        let s = |ip| slice("a", "x", "web", ip);
        stores.endpoint_slices.apply(watcher::Event::Apply(s(1)));
        let before = stores.snapshot(&host());
        stores.endpoint_slices.apply(watcher::Event::Apply(s(2)));
        stores
            .endpoint_slices
            .apply(watcher::Event::Apply(slice("a", "y", "web", 3)));
        let after = stores.snapshot(&host());
        let ips = |snap: &Snapshot| -> Vec<String> {
            snap.slices_of("a", "web")
                .map(|s| s.endpoints[0].addresses[0].to_string())
                .collect()
        };
        assert_eq!(ips(&before), ["10.0.0.1"], "the held snapshot is unchanged");
        assert_eq!(ips(&after), ["10.0.0.2", "10.0.0.3"]);
        drop(before);
        stores.endpoint_slices.apply(watcher::Event::Delete(s(2)));
        assert_eq!(ips(&after), ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(ips(&stores.snapshot(&host())), ["10.0.0.3"]);
    }

    /// One watch event of a small random cluster: a slice (namespace,
    /// name, service, address) applied, or deleted.
    fn event() -> impl Strategy<Value = (bool, u8, u8, u8, u8)> {
        (any::<bool>(), 0..3u8, 0..6u8, 0..3u8, 0..3u8)
    }

    fn service(ns: &str, name: &str, port: u8) -> k8s_openapi::api::core::v1::Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": port}]}
        }))
        .unwrap()
    }

    fn host() -> HostInfo {
        HostInfo {
            node_name: "node-a".into(),
            local_addresses: vec![],
        }
    }

    proptest! {
        /// A snapshot of the stores, after any sequence of events, is the
        /// snapshot the sorting constructor makes of what they hold.
        #[test]
        fn a_snapshot_of_the_stores_equals_a_sorted_one(
            events in prop::collection::vec((event(), any::<bool>()), 0..60),
        ) {
            use std::collections::BTreeMap;
            use crate::cluster::KubeObject;
            let stores = Stores::default();
            let node: Node = serde_json::from_value(json!({"metadata": {"name": "node-a"}})).unwrap();
            stores.nodes.apply(watcher::Event::Apply(node.clone()));
            let mut held: BTreeMap<(bool, String, String), KubeObject> = BTreeMap::new();
            for ((delete, ns, name, service_n, ip), is_slice) in events {
                let (ns, name) = (format!("ns-{ns}"), format!("o-{name}"));
                let key = (is_slice, ns.clone(), name.clone());
                if is_slice {
                    let o = slice_k8s(&ns, &name, &format!("svc-{service_n}"), ip);
                    if delete {
                        stores.endpoint_slices.apply(watcher::Event::Delete(o.into()));
                        held.remove(&key);
                    } else {
                        stores.endpoint_slices.apply(watcher::Event::Apply(o.clone().into()));
                        held.insert(key, KubeObject::EndpointSlice(Box::new(o)));
                    }
                } else {
                    let o = service(&ns, &name, ip);
                    if delete {
                        stores.services.apply(watcher::Event::Delete(o.into()));
                        held.remove(&key);
                    } else {
                        stores.services.apply(watcher::Event::Apply(o.clone().into()));
                        held.insert(key, KubeObject::Service(Box::new(o)));
                    }
                }
            }
            let objects = held.into_values().rev().chain([KubeObject::Node(Box::new(node))]);
            let sorted = Snapshot::from_objects(objects, host());
            prop_assert_eq!(format!("{:?}", stores.snapshot(&host())), format!("{sorted:?}"));
        }


        /// Whatever the events, both orders equal a sort of what is held,
        /// and the store holds exactly the last version of each name.
        #[test]
        fn the_store_stays_sorted_both_ways(events in prop::collection::vec(event(), 0..60)) {
            let store = Ordered::<EndpointSlice>::default();
            let mut model = std::collections::BTreeMap::new();
            for (delete, ns, name, service, ip) in events {
                let ns = format!("ns-{ns}");
                let name = format!("s-{name}");
                let o = slice(&ns, &name, &format!("svc-{service}"), ip);
                if delete {
                    store.apply(watcher::Event::Delete(o));
                    model.remove(&(ns, name));
                } else {
                    store.apply(watcher::Event::Apply(o.clone()));
                    model.insert((ns, name), o);
                }
            }
            let held: Vec<EndpointSlice> = store.all().iter().map(|o| (**o).clone()).collect();
            let want: Vec<EndpointSlice> = model.values().cloned().collect();
            prop_assert_eq!(held, want);
            let mut grouped: Vec<&EndpointSlice> = model.values().collect();
            grouped.sort_by_key(|o| group_key(*o));
            let by_group = store.all_by_group();
            let got: Vec<&EndpointSlice> = by_group.iter().map(|o| &**o).collect();
            prop_assert_eq!(got, grouped);
        }
    }
}
