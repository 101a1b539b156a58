//! The Kubernetes kinds ipwarden reads, typed with k8s-openapi.

use std::fmt;

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Node, Pod, Service},
        discovery::v1::EndpointSlice,
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

/// One object of a kind ipwarden uses.
#[derive(Clone, Debug, PartialEq)]
pub enum KubeObject {
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Pod(Box<Pod>),
    Namespace(Box<Namespace>),
    NetworkPolicy(Box<NetworkPolicy>),
    ClusterNetworkPolicy(Box<super::cnp::ClusterNetworkPolicy>),
    Node(Box<Node>),
}

impl KubeObject {
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            KubeObject::Service(o) => &o.metadata,
            KubeObject::EndpointSlice(o) => &o.metadata,
            KubeObject::Pod(o) => &o.metadata,
            KubeObject::Namespace(o) => &o.metadata,
            KubeObject::NetworkPolicy(o) => &o.metadata,
            KubeObject::ClusterNetworkPolicy(o) => &o.metadata,
            KubeObject::Node(o) => &o.metadata,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            KubeObject::Service(_) => "Service",
            KubeObject::EndpointSlice(_) => "EndpointSlice",
            KubeObject::Pod(_) => "Pod",
            KubeObject::Namespace(_) => "Namespace",
            KubeObject::NetworkPolicy(_) => "NetworkPolicy",
            KubeObject::ClusterNetworkPolicy(_) => super::cnp::KIND,
            KubeObject::Node(_) => "Node",
        }
    }

    pub fn source_kind(&self) -> super::Kind {
        use super::Kind;
        match self {
            KubeObject::Service(_) => Kind::Service,
            KubeObject::EndpointSlice(_) => Kind::EndpointSlice,
            KubeObject::Pod(_) => Kind::Pod,
            KubeObject::Namespace(_) => Kind::Namespace,
            KubeObject::NetworkPolicy(_) => Kind::NetworkPolicy,
            KubeObject::ClusterNetworkPolicy(_) => Kind::ClusterNetworkPolicy,
            KubeObject::Node(_) => Kind::Node,
        }
    }

    pub fn reference(&self) -> ObjectRef {
        ObjectRef::new(self.kind(), self.meta())
    }
}

/// kind/namespace/name, for logs and errors: "Service default/web".
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: &'static str, meta: &ObjectMeta) -> Self {
        Self {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}
