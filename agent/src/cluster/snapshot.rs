//! An immutable, ordered view of the cluster as this node sees it.
//!
//! Objects are shared (`Arc`) with the source's stores, and so is each
//! kind's ordered list ([`List`]): a snapshot of a big cluster costs one
//! pointer copy per kind, not a copy per object (10k Services, their
//! slices and 5k Pods were 9 ms per sync in the VM). The API server's
//! stores keep their kinds in order as events arrive ([`super::store`]),
//! so its snapshots are not sorted either.

use std::{net::IpAddr, sync::Arc};

use k8s_openapi::api::{
    core::v1::{Namespace, Node},
    networking::v1::NetworkPolicy,
};

use super::{
    cnp::ClusterNetworkPolicy,
    compact::{EndpointSlice, Keep, Pod, Service, Stored},
    KubeObject,
};

/// Facts about this node that do not come from the API server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// This node's name (`--node-name`), to find its Node and its endpoints.
    pub node_name: String,
    /// Addresses configured on the node's interfaces (for
    /// `ipwarden-local-ips`), excluding the VIPs on ipwarden0.
    pub local_addresses: Vec<IpAddr>,
}

/// A kind's objects in (namespace, name) order, shared between the store
/// and its snapshots: the store copies the list only when it changes while
/// a snapshot still holds it (copy on write), so taking a snapshot never
/// copies it. Reads as the `Vec` it shares.
pub struct List<K>(Arc<Vec<Arc<K>>>);

impl<K> List<K> {
    pub fn new(objects: Vec<Arc<K>>) -> Self {
        Self(Arc::new(objects))
    }

    /// The list to change: copied first if a snapshot still holds it.
    pub fn make_mut(&mut self) -> &mut Vec<Arc<K>> {
        Arc::make_mut(&mut self.0)
    }
}

impl<K> Clone for List<K> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K> Default for List<K> {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl<K> std::ops::Deref for List<K> {
    type Target = Vec<Arc<K>>;

    fn deref(&self) -> &Vec<Arc<K>> {
        &self.0
    }
}

impl<'a, K> IntoIterator for &'a List<K> {
    type Item = &'a Arc<K>;
    type IntoIter = std::slice::Iter<'a, Arc<K>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<K: std::fmt::Debug> std::fmt::Debug for List<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Everything the controllers read. Lists are sorted by namespace and name
/// so that the same cluster always gives the same desired state, byte for
/// byte, whatever order the source delivered objects in.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub services: List<Service>,
    pub endpoint_slices: List<EndpointSlice>,
    pub pods: List<Pod>,
    pub namespaces: List<Namespace>,
    pub network_policies: List<NetworkPolicy>,
    /// Sorted by name (cluster-scoped).
    pub cluster_network_policies: List<ClusterNetworkPolicy>,
    /// This node's Node object, if the source has it.
    pub node: Option<Arc<Node>>,
    pub host: HostInfo,
    /// The slices that name a Service, sorted by (namespace, service): a
    /// Service finds its slices by binary search, without scanning them
    /// all (10k Services would otherwise cost 10k x 10k label
    /// comparisons). The API server's store keeps this order as events
    /// arrive.
    pub(super) slices_by_service: List<EndpointSlice>,
}

/// (namespace, service) of a slice that names its Service (label
/// kubernetes.io/service-name).
pub fn slice_service(s: &EndpointSlice) -> Option<(&str, &str)> {
    Some((s.metadata.namespace()?, s.service.as_deref()?))
}

impl Snapshot {
    /// Builds a snapshot from objects in any order; the Node kept is the one
    /// named `host.node_name`.
    pub fn from_objects(objects: impl IntoIterator<Item = KubeObject>, host: HostInfo) -> Self {
        let mut s = Snapshot {
            host,
            ..Snapshot::default()
        };
        for o in objects {
            s.push(o);
        }
        s.sort();
        s
    }

    /// Builds a snapshot from shared objects in any order (what a source's
    /// stores hold); `node` should already be this node's.
    #[allow(clippy::too_many_arguments)]
    pub fn from_shared(
        services: Vec<Arc<Service>>,
        endpoint_slices: Vec<Arc<EndpointSlice>>,
        pods: Vec<Arc<Pod>>,
        namespaces: Vec<Arc<Namespace>>,
        network_policies: Vec<Arc<NetworkPolicy>>,
        node: Option<Arc<Node>>,
        host: HostInfo,
    ) -> Self {
        let mut s = Snapshot {
            services: List::new(services),
            endpoint_slices: List::new(endpoint_slices),
            pods: List::new(pods),
            namespaces: List::new(namespaces),
            network_policies: List::new(network_policies),
            node,
            host,
            ..Snapshot::default()
        };
        s.sort();
        s
    }

    /// The same snapshot with `policies` as its ClusterNetworkPolicies
    /// (a source that has them; sorted here).
    pub fn with_cluster_network_policies(
        mut self,
        policies: Vec<Arc<ClusterNetworkPolicy>>,
    ) -> Self {
        let mut policies = policies;
        policies.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        self.cluster_network_policies = List::new(policies);
        self
    }

    /// The objects in exactly the order given, not sorted (the slice index
    /// is built): for tests showing that a controller does not depend on
    /// the order a snapshot holds its objects in.
    #[cfg(test)]
    pub(crate) fn in_given_order(
        objects: impl IntoIterator<Item = KubeObject>,
        host: HostInfo,
    ) -> Self {
        let mut s = Snapshot {
            host,
            ..Snapshot::default()
        };
        for o in objects {
            s.push(o);
        }
        s.index_slices();
        s
    }

    /// Adds one object (the lists are this snapshot's own while it is
    /// built: no copy).
    fn push(&mut self, o: KubeObject) {
        fn add<K>(list: &mut List<K>, o: K) {
            list.make_mut().push(Arc::new(o));
        }
        match o {
            KubeObject::Service(x) => add(&mut self.services, x.keep()),
            KubeObject::EndpointSlice(x) => add(&mut self.endpoint_slices, x.keep()),
            KubeObject::Pod(x) => add(&mut self.pods, x.keep()),
            KubeObject::Namespace(x) => add(&mut self.namespaces, x.keep()),
            KubeObject::NetworkPolicy(x) => add(&mut self.network_policies, x.keep()),
            KubeObject::ClusterNetworkPolicy(x) => {
                add(&mut self.cluster_network_policies, x.keep())
            }
            KubeObject::Node(x) => {
                if x.metadata.name.as_deref() == Some(self.host.node_name.as_str()) {
                    self.node = Some(Arc::new(x.keep()));
                }
            }
        }
    }

    fn sort(&mut self) {
        // Borrowed keys: no allocation per comparison.
        fn sort<K: Stored>(list: &mut List<K>) {
            list.make_mut().sort_by(|a, b| a.key().cmp(&b.key()));
        }
        sort(&mut self.services);
        sort(&mut self.endpoint_slices);
        sort(&mut self.pods);
        sort(&mut self.namespaces);
        sort(&mut self.network_policies);
        sort(&mut self.cluster_network_policies);
        self.index_slices();
    }

    fn index_slices(&mut self) {
        let mut by_service: Vec<Arc<EndpointSlice>> = self
            .endpoint_slices
            .iter()
            .filter(|s| slice_service(s).is_some())
            .cloned()
            .collect();
        // Stable: a Service's slices stay in the order of `endpoint_slices`.
        by_service.sort_by(|a, b| slice_service(a).cmp(&slice_service(b)));
        self.slices_by_service = List::new(by_service);
    }

    /// The Service `namespace`/`name`, by binary search (a Service
    /// without a namespace is in "default").
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        find(&self.services, namespace, name)
            .or_else(|| find(&self.services, "", name).filter(|_| namespace == "default"))
    }

    /// The EndpointSlice `namespace`/`name`, by binary search.
    pub fn endpoint_slice(&self, namespace: &str, name: &str) -> Option<&EndpointSlice> {
        find(&self.endpoint_slices, namespace, name)
    }

    /// The EndpointSlices of one Service (label kubernetes.io/service-name).
    pub fn slices_of<'a>(
        &'a self,
        namespace: &str,
        service: &str,
    ) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        let want = Some((namespace, service));
        let list = &self.slices_by_service;
        let lo = list.partition_point(|s| slice_service(s) < want);
        let hi = list.partition_point(|s| slice_service(s) <= want);
        list[lo..hi].iter().map(|s| &**s)
    }
}

/// The object `namespace`/`name` of a list sorted by (namespace, name).
fn find<'a, K: Stored>(list: &'a [Arc<K>], namespace: &str, name: &str) -> Option<&'a K> {
    let i = list
        .binary_search_by(|o| o.key().cmp(&(namespace, name)))
        .ok()?;
    Some(&list[i])
}
