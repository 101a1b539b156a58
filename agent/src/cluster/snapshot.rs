//! An immutable, ordered view of the cluster as this node sees it.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
    networking::v1::NetworkPolicy,
};

use super::KubeObject;

/// Facts about this node that do not come from the API server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// This node's name (`--node-name`), to find its Node and its endpoints.
    pub node_name: String,
    /// Addresses configured on the node's interfaces (for
    /// `ipwarden-local-ips`), excluding the VIPs on ipwarden0.
    pub local_addresses: Vec<IpAddr>,
}

/// Everything the controllers read. Lists are sorted by namespace and name
/// so that the same cluster always gives the same desired state, byte for
/// byte, whatever order the source delivered objects in.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub pods: Vec<Pod>,
    pub namespaces: Vec<Namespace>,
    pub network_policies: Vec<NetworkPolicy>,
    /// This node's Node object, if the source has it.
    pub node: Option<Node>,
    pub host: HostInfo,
    /// (namespace, service name) -> indexes into `endpoint_slices`, so a
    /// Service finds its slices without scanning them all (10k Services
    /// would otherwise cost 10k x 10k label comparisons).
    slice_index: BTreeMap<(String, String), Vec<usize>>,
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

    fn push(&mut self, o: KubeObject) {
        match o {
            KubeObject::Service(x) => self.services.push(*x),
            KubeObject::EndpointSlice(x) => self.endpoint_slices.push(*x),
            KubeObject::Pod(x) => self.pods.push(*x),
            KubeObject::Namespace(x) => self.namespaces.push(*x),
            KubeObject::NetworkPolicy(x) => self.network_policies.push(*x),
            KubeObject::Node(x) => {
                if x.metadata.name.as_deref() == Some(self.host.node_name.as_str()) {
                    self.node = Some(*x);
                }
            }
        }
    }

    fn sort(&mut self) {
        fn key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
            (
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
            )
        }
        self.services.sort_by_key(|o| key(&o.metadata));
        self.endpoint_slices.sort_by_key(|o| key(&o.metadata));
        self.pods.sort_by_key(|o| key(&o.metadata));
        self.namespaces.sort_by_key(|o| key(&o.metadata));
        self.network_policies.sort_by_key(|o| key(&o.metadata));
        self.slice_index.clear();
        for (i, s) in self.endpoint_slices.iter().enumerate() {
            let service = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"));
            if let (Some(ns), Some(service)) = (&s.metadata.namespace, service) {
                self.slice_index
                    .entry((ns.clone(), service.clone()))
                    .or_default()
                    .push(i);
            }
        }
    }

    /// The EndpointSlices of one Service (label kubernetes.io/service-name).
    pub fn slices_of<'a>(
        &'a self,
        namespace: &str,
        service: &str,
    ) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        self.slice_index
            .get(&(namespace.to_string(), service.to_string()))
            .into_iter()
            .flatten()
            .map(|i| &self.endpoint_slices[*i])
    }
}
