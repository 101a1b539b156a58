//! An EndpointSlice as the service controller reads it.

use k8s_openapi::api::discovery::v1 as k8s;

use super::{common, text, texts, Meta, Shared, Text, Texts};

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSlice {
    /// Without labels: the one read is `service`.
    pub metadata: Meta,
    /// Label kubernetes.io/service-name.
    pub service: Option<Text>,
    pub address_type: Shared,
    pub ports: Box<[EndpointPort]>,
    pub endpoints: Box<[Endpoint]>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointPort {
    pub name: Option<Shared>,
    pub protocol: Option<Shared>,
    pub port: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Addresses,
    pub node_name: Option<Shared>,
    pub conditions: Conditions,
}

/// An endpoint's addresses, read as a slice. Almost every endpoint has
/// one: held without a list around it (one small allocation fewer per
/// endpoint, 30k of them at 10k Services).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addresses {
    One(Text),
    Many(Texts),
}

impl Default for Addresses {
    fn default() -> Self {
        Self::Many(Texts::default())
    }
}

impl From<Vec<String>> for Addresses {
    fn from(mut list: Vec<String>) -> Self {
        match list.pop() {
            Some(only) if list.is_empty() => Self::One(text(only)),
            Some(last) => {
                list.push(last);
                Self::Many(texts(list))
            }
            None => Self::default(),
        }
    }
}

impl std::ops::Deref for Addresses {
    type Target = [Text];

    fn deref(&self) -> &[Text] {
        match self {
            Self::One(only) => std::slice::from_ref(only),
            Self::Many(list) => list,
        }
    }
}

impl std::ops::DerefMut for Addresses {
    fn deref_mut(&mut self) -> &mut [Text] {
        match self {
            Self::One(only) => std::slice::from_mut(only),
            Self::Many(list) => list,
        }
    }
}

/// An endpoint's conditions; `None` where the API left one out (and
/// where the slice gave no conditions at all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

impl From<k8s::EndpointSlice> for EndpointSlice {
    fn from(s: k8s::EndpointSlice) -> Self {
        let mut metadata = s.metadata;
        let service = metadata
            .labels
            .as_mut()
            .and_then(|l| l.remove(SERVICE_NAME_LABEL))
            .map(text);
        Self {
            metadata: Meta::kept(metadata, |_| false),
            service,
            address_type: common(s.address_type),
            ports: s
                .ports
                .into_iter()
                .flatten()
                .map(|p| EndpointPort {
                    name: p.name.map(common),
                    protocol: p.protocol.map(common),
                    port: p.port,
                })
                .collect(),
            endpoints: s.endpoints.into_iter().map(Endpoint::from).collect(),
        }
    }
}

impl From<k8s::Endpoint> for Endpoint {
    fn from(e: k8s::Endpoint) -> Self {
        let c = e.conditions.unwrap_or_default();
        Self {
            addresses: e.addresses.into(),
            node_name: e.node_name.map(common),
            conditions: Conditions {
                ready: c.ready,
                serving: c.serving,
                terminating: c.terminating,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_slice_keeps_its_service_ports_and_each_endpoints_address_node_and_conditions() {
        let slice: k8s::EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-a", "namespace": "shop", "uid": "u",
                "labels": {"kubernetes.io/service-name": "web", "app": "web"},
                "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "nodeName": "node-a", "zone": "z",
                    "targetRef": {"kind": "Pod", "name": "web-1"},
                    "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.244.2.5"]}
            ]
        }))
        .unwrap();
        let kept = EndpointSlice::from(slice);
        assert_eq!(kept.service.as_deref(), Some("web"));
        assert!(kept.metadata.labels.is_empty());
        assert!(kept
            .metadata
            .annotations
            .get("endpoints.kubernetes.io/last-change-trigger-time")
            .is_some());
        assert_eq!(kept.ports[0].port, Some(8080));
        let first = &kept.endpoints[0];
        assert_eq!(
            (&*first.addresses[0], first.node_name.as_deref()),
            ("10.244.1.5", Some("node-a"))
        );
        assert_eq!(
            first.conditions,
            Conditions {
                ready: Some(false),
                serving: Some(true),
                terminating: Some(true)
            }
        );
        assert_eq!(kept.endpoints[1].conditions, Conditions::default());
    }
}
