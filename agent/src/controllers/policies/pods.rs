//! The pods and namespaces policies look at: which pods are actionable
//! (have an IP, are not host-network, not finished), their addresses,
//! labels and named ports, and which ones run on this node.

use std::{collections::BTreeMap, net::IpAddr};

use super::{
    model::{Namespaces, Peer, Policy},
    selector::Selector,
};
use crate::{
    cluster::{
        compact::{Labels, Pod},
        Snapshot,
    },
    desired::{Problem, Protocol},
};

/// Every namespace carries this label with its own name (the API server
/// sets it), so policies can select a namespace by name.
pub(super) const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A container port with a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub proto: Protocol,
    pub port: u16,
}

/// One actionable pod.
#[derive(Clone, Debug)]
pub struct PodView<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: Option<&'a Labels>,
    /// Both addresses of a dual-stack pod.
    pub ips: Vec<IpAddr>,
    pub local: bool,
    pub ports: Vec<NamedPort>,
}

impl PodView<'_> {
    pub fn named_port(&self, name: &str, proto: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.proto == proto)
            .map(|p| p.port)
    }
}

/// Pods and namespace labels of one snapshot.
pub struct Cluster<'a> {
    pub pods: Vec<PodView<'a>>,
    namespace_labels: BTreeMap<&'a str, BTreeMap<String, String>>,
    /// Indexes into `pods` by namespace, in snapshot order: a peer only
    /// looks at the namespaces it can match.
    by_namespace: BTreeMap<&'a str, Vec<usize>>,
}

impl<'a> Cluster<'a> {
    /// No pods, no namespaces: rendering a policy against it gives its
    /// chain and its sets without pod members (the incremental index adds
    /// those member by member).
    pub fn empty() -> Self {
        Self {
            pods: Vec::new(),
            namespace_labels: BTreeMap::new(),
            by_namespace: BTreeMap::new(),
        }
    }

    pub fn new(snapshot: &'a Snapshot, problems: &mut Vec<Problem>) -> Self {
        let mut namespace_labels = BTreeMap::new();
        for ns in &snapshot.namespaces {
            let Some(name) = ns.metadata.name.as_deref() else {
                continue;
            };
            namespace_labels.insert(name, namespace_labels_of(ns, name));
        }
        let mut pods: Vec<PodView<'a>> = snapshot
            .pods
            .iter()
            .filter_map(|p| view(p, &snapshot.host.node_name, problems))
            .collect();
        // Pod order (namespace, name), whatever order the snapshot holds.
        pods.sort_by(|a, b| (a.namespace, a.name).cmp(&(b.namespace, b.name)));
        let mut by_namespace: BTreeMap<&'a str, Vec<usize>> = BTreeMap::new();
        for (i, p) in pods.iter().enumerate() {
            by_namespace.entry(p.namespace).or_default().push(i);
        }
        Self {
            pods,
            namespace_labels,
            by_namespace,
        }
    }

    pub(super) fn namespace_matches(&self, namespace: &str, selector: &Selector) -> bool {
        namespace_matches(self.namespace_labels.get(namespace), namespace, selector)
    }

    /// The pods a policy applies to.
    pub fn selected_by<'s>(
        &'s self,
        policy: &'s Policy,
    ) -> impl Iterator<Item = &'s PodView<'a>> + 's {
        self.pods.iter().filter(move |p| {
            p.namespace == policy.namespace && policy.pod_selector.matches(p.labels)
        })
    }

    /// The pods matching any pod peer in `peers` of a policy in
    /// `policy_namespace`, in snapshot order. Each peer looks only at the
    /// pods of the namespaces it can match (its namespace selector is
    /// checked once per namespace, not once per pod).
    pub fn peer_pods(&self, peers: &[Peer], policy_namespace: &str) -> Vec<&PodView<'a>> {
        let mut found = Vec::new();
        for peer in peers {
            let Peer::Pods { namespaces, pods } = peer else {
                continue;
            };
            let mut take = |indexes: &[usize]| {
                found.extend(
                    indexes
                        .iter()
                        .copied()
                        .filter(|&i| pods.matches(self.pods[i].labels)),
                )
            };
            match namespaces {
                Namespaces::Own => {
                    if let Some(indexes) = self.by_namespace.get(policy_namespace) {
                        take(indexes);
                    }
                }
                Namespaces::Matching(s) => {
                    for (ns, indexes) in &self.by_namespace {
                        if self.namespace_matches(ns, s) {
                            take(indexes);
                        }
                    }
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        found.into_iter().map(|i| &self.pods[i]).collect()
    }

    /// Does `pod` match a pod peer of a policy in `policy_namespace`?
    pub fn peer_matches(&self, peer: &Peer, policy_namespace: &str, pod: &PodView<'_>) -> bool {
        match peer {
            Peer::Block(_) => false,
            Peer::Pods { namespaces, pods } => {
                let ns_ok = match namespaces {
                    Namespaces::Own => pod.namespace == policy_namespace,
                    Namespaces::Matching(s) => self.namespace_matches(pod.namespace, s),
                };
                ns_ok && pods.matches(pod.labels)
            }
        }
    }
}

/// A namespace's labels as selectors see them: with its name label.
pub(super) fn namespace_labels_of(
    ns: &k8s_openapi::api::core::v1::Namespace,
    name: &str,
) -> BTreeMap<String, String> {
    let mut labels = ns.metadata.labels.clone().unwrap_or_default();
    labels.insert(NAME_LABEL.into(), name.into());
    labels
}

/// Does a namespace with `labels` (None: no Namespace object) match?
pub(super) fn namespace_matches(
    labels: Option<&BTreeMap<String, String>>,
    namespace: &str,
    selector: &Selector,
) -> bool {
    match labels {
        Some(labels) => selector.matches(Some(labels)),
        // No Namespace object: only its name label is known.
        None => {
            let labels = BTreeMap::from([(NAME_LABEL.to_string(), namespace.to_string())]);
            selector.matches(Some(&labels))
        }
    }
}

/// A pod that policies act on, or None (host network, no IP, finished).
pub(super) fn view<'a>(
    pod: &'a Pod,
    node: &str,
    problems: &mut Vec<Problem>,
) -> Option<PodView<'a>> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let namespace = pod.metadata.namespace().unwrap_or("default");
    let name = pod.metadata.name();
    // (index in podIPs, or None for podIP; the text): the field's name
    // is only written out for a problem (views are taken per pod change).
    let mut texts: Vec<(Option<usize>, &str)> = status
        .pod_ips
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, a)| (Some(i), &**a))
        .collect();
    if texts.is_empty() {
        texts.extend(status.pod_ip.as_deref().map(|a| (None, a)));
    }
    let mut ips = Vec::with_capacity(texts.len());
    for (at, text) in texts {
        match text.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) => problems.push(Problem {
                object: format!("Pod {namespace}/{name}"),
                field: at.map_or_else(
                    || "status.podIP".to_string(),
                    |i| format!("status.podIPs[{i}].ip"),
                ),
                message: format!("{text:?} is not an IP address"),
                skipped: false,
            }),
        }
    }
    if ips.is_empty() {
        return None;
    }
    let ports = spec
        .ports
        .iter()
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.to_string(),
                proto: Protocol::from_kubernetes(p.protocol.as_deref().unwrap_or("TCP"))?,
                port: u16::try_from(p.container_port).ok()?,
            })
        })
        .collect();
    Some(PodView {
        namespace,
        name,
        labels: Some(&pod.metadata.labels),
        ips,
        local: spec.node_name.as_deref() == Some(node),
        ports,
    })
}
