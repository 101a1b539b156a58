//! Real servers of one Service port, from its EndpointSlices.

use std::{collections::BTreeMap, net::IpAddr};

use crate::{
    cluster::compact::EndpointSlice,
    desired::{Forward, Problem, Protocol, RealServer},
};

/// A backend with where it runs, for traffic policy Local.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend<'a> {
    pub server: RealServer,
    pub node: Option<&'a str>,
}

/// Ready or serving endpoints of the slices for the service port named
/// `port_name` with `proto`. Terminating endpoints that still serve get
/// weight 0 (drained: established connections stay, new ones go
/// elsewhere); endpoints that do not serve are left out. Bad addresses are
/// reported against their EndpointSlice.
pub fn backends<'a>(
    slices: impl Iterator<Item = &'a EndpointSlice>,
    port_name: &str,
    proto: Protocol,
    problems: &mut Vec<Problem>,
) -> Vec<Backend<'a>> {
    // Keyed by (addr, port) so an endpoint listed in two slices during a
    // slice rebalance counts once, at its highest weight.
    let mut found: BTreeMap<(IpAddr, u16), Backend<'a>> = BTreeMap::new();
    for slice in slices {
        if &*slice.address_type == "FQDN" {
            continue;
        }
        let object = format!(
            "EndpointSlice {}/{}",
            slice.metadata.namespace().unwrap_or_default(),
            slice.metadata.name()
        );
        let Some(port) = slice_port(slice, port_name, proto) else {
            continue;
        };
        let port = match u16::try_from(port) {
            Ok(p) if p > 0 => p,
            _ => {
                problems.push(Problem {
                    object,
                    field: "ports[].port".into(),
                    message: format!("port {port} is not in 1..65535"),
                    skipped: true,
                });
                continue;
            }
        };
        for (i, ep) in slice.endpoints.iter().enumerate() {
            let c = ep.conditions;
            let ready = c.ready.unwrap_or(true);
            let serving = c.serving.unwrap_or(ready);
            let terminating = c.terminating.unwrap_or(false);
            if !(ready || serving) {
                continue;
            }
            let weight = if terminating { 0 } else { 1 };
            for (j, a) in ep.addresses.iter().enumerate() {
                let addr: IpAddr = match a.parse() {
                    Ok(addr) => addr,
                    Err(_) => {
                        problems.push(Problem {
                            object: object.clone(),
                            field: format!("endpoints[{i}].addresses[{j}]"),
                            message: format!("{a:?} is not an IP address"),
                            skipped: true,
                        });
                        continue;
                    }
                };
                let b = Backend {
                    server: RealServer {
                        addr,
                        port,
                        weight,
                        forward: Forward::Masq,
                    },
                    node: ep.node_name.as_deref(),
                };
                found
                    .entry((addr, port))
                    .and_modify(|old| {
                        if weight > old.server.weight {
                            *old = b;
                        }
                    })
                    .or_insert(b);
            }
        }
    }
    found.into_values().collect()
}

/// Ready, not terminating endpoints on `node`: a health check's count.
/// Counted per address family and the larger count taken, so a pod of a
/// dual-stack Service (one address in each family's slices) counts once.
pub fn local_ready<'a>(slices: impl Iterator<Item = &'a EndpointSlice>, node: &str) -> u32 {
    let mut found: [std::collections::BTreeSet<&str>; 2] = Default::default();
    for slice in slices.filter(|s| &*s.address_type != "FQDN") {
        let family = usize::from(&*slice.address_type == "IPv6");
        for ep in &slice.endpoints {
            let c = ep.conditions;
            let ready = c.ready.unwrap_or(true);
            let terminating = c.terminating.unwrap_or(false);
            if ready && !terminating && ep.node_name.as_deref() == Some(node) {
                found[family].extend(ep.addresses.first().map(|a| &**a));
            }
        }
    }
    found.iter().map(|f| f.len() as u32).max().unwrap_or(0)
}

/// The slice's port number for the service port (matched by name, as the
/// EndpointSlice controller names them after the Service's ports).
fn slice_port(slice: &EndpointSlice, port_name: &str, proto: Protocol) -> Option<i32> {
    slice.ports.iter().find_map(|p| {
        let name = p.name.as_deref().unwrap_or_default();
        let p_proto = p.protocol.as_deref().unwrap_or("TCP");
        (name == port_name && Protocol::from_kubernetes(p_proto) == Some(proto))
            .then_some(p.port)
            .flatten()
    })
}
