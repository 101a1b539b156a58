//! `/state`: what the running agent knows, as JSON, for `ipwarden status`
//! and `ipwarden explain`.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Serialize, Serializer};
use serde_json::{json, Value};

use crate::{
    cluster::{compact::Pod, source::ResourceHealth, HostInfo, Source},
    desired::VirtualService,
    kernel::iptables::backend,
    reconcile::{
        board::{Board, BoardState, SyncRecord},
        services::ServicesView,
    },
};

/// What `/state` reads: the board the controllers write, and the source
/// (each resource's state, this node's pods) asked when the request comes.
#[derive(Clone)]
pub struct StatusView {
    pub board: Board,
    pub source: Arc<dyn Source>,
    pub node_name: String,
}

impl StatusView {
    /// The `/state` document as JSON text. The virtual services are
    /// written one at a time from the service controller's table, never
    /// gathered first: at 10k Services a tree of them (and the whole
    /// assembled state behind it) cost the agent over 60 MiB per request.
    /// The rest is written out (and its tree dropped) before them, and the
    /// text goes into a buffer of its measured size: a buffer grown by
    /// doubling held 4 MiB for 3 MiB of text, beside a 1.9 MiB tree, and
    /// was the agent's highest heap after its first sync at 10k.
    pub fn render(&self, ready: bool) -> String {
        let board = self.board.read();
        let rest = self.to_json(&board, ready);
        document(rest, &VirtualServices(board.services.as_ref()))
    }

    /// Everything `/state` holds but the virtual services.
    fn to_json(&self, board: &BoardState, ready: bool) -> Value {
        let mut out = to_json(board);
        out["ready"] = ready.into();
        out["sources"] = self.source.health().iter().map(source).collect();
        let host = HostInfo {
            node_name: self.node_name.clone(),
            local_addresses: Vec::new(),
        };
        out["node"] = self.node_name.clone().into();
        let iptables = backend::current();
        out["iptables"] = json!({"backend": iptables.backend.to_string(), "why": iptables.why});
        out["node_pods"] = match self.source.snapshot(&host) {
            Some(snapshot) => snapshot
                .pods
                .iter()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&self.node_name)
                })
                .map(|p| node_pod(p))
                .collect(),
            None => Value::Null,
        };
        out
    }
}

/// `rest`'s fields (an object's), then `"virtual_services": services`:
/// the text of `{rest..., "virtual_services": services}`, with `rest`
/// written and dropped first and the rest written into a buffer of its
/// measured size.
fn document(rest: Value, services: &impl Serialize) -> String {
    // Moved into the text's scope, so the tree is freed as soon as it is
    // written (a shadowing `let` would keep it to the end of the function).
    let rest = text_of(rest);
    let head = rest.strip_suffix('}').expect("an object");
    let comma = if head == "{" { "" } else { "," };
    let key = "\"virtual_services\":";
    let mut counted = Counted(0);
    serde_json::to_writer(&mut counted, services).expect("JSON of values and strings");
    let mut out = Vec::with_capacity(head.len() + comma.len() + key.len() + counted.0 + 1);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(comma.as_bytes());
    out.extend_from_slice(key.as_bytes());
    serde_json::to_writer(&mut out, services).expect("JSON of values and strings");
    out.push(b'}');
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// The JSON text of `value`, which is dropped here.
fn text_of(value: Value) -> String {
    serde_json::to_string(&value).expect("JSON of values")
}

/// A writer that only counts the bytes: the text's length, nothing kept.
struct Counted(usize);

impl std::io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The service controller's virtual services, serialized as they are read.
struct VirtualServices<'a>(Option<&'a ServicesView>);

impl Serialize for VirtualServices<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => serializer.collect_seq(std::iter::empty::<Value>()),
            Some(view) => {
                view.with_virtual_services(|all| serializer.collect_seq(all.map(virtual_service)))
            }
        }
    }
}

/// One virtual service as `/state` lists it.
pub fn virtual_service(vs: &VirtualService) -> Value {
    json!({
        "address": vs.key.addr.to_string(),
        "protocol": vs.key.proto.as_str(),
        "port": vs.key.port,
        "service": format!("{}/{}", vs.service.namespace, vs.service.name),
        "origin": vs.origin,
        "scheduler": vs.scheduler,
        "destinations": vs.destinations.iter().map(|d| json!({
            "address": d.addr.to_string(), "port": d.port, "weight": d.weight,
        })).collect::<Vec<_>>(),
    })
}

/// One resource of the source: listed, failing (with why) or waiting for
/// its first list.
fn source(h: &ResourceHealth) -> Value {
    let state = match (&h.error, h.listed) {
        (Some(_), _) => "failing",
        (None, true) => "listed",
        (None, false) => "waiting for the first list",
    };
    json!({
        "resource": h.resource,
        "state": state,
        "error": h.error,
        "failures": h.failures,
        "skipped_objects": h.skipped_objects,
        "held_shrinks": h.held_shrinks,
    })
}

/// A pod of this node: `namespace/name` and its addresses.
fn node_pod(p: &Pod) -> Value {
    let status = p.status.as_ref();
    let mut ips: Vec<&str> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|a| &**a)
        .collect();
    if ips.is_empty() {
        ips.extend(status.and_then(|s| s.pod_ip.as_deref()));
    }
    json!({
        "pod": format!(
            "{}/{}",
            p.metadata.namespace().unwrap_or("default"),
            p.metadata.name()
        ),
        "ips": ips,
        "host_network": p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false),
    })
}

fn record(r: &Option<SyncRecord>) -> Value {
    match r {
        None => Value::Null,
        Some(r) => json!({
            "at_unix": r.at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
            "age_seconds": SystemTime::now().duration_since(r.at).map_or(0.0, |d| d.as_secs_f64()),
            "duration_ms": r.duration.as_secs_f64() * 1e3,
            "summary": r.summary,
        }),
    }
}

pub fn to_json(b: &BoardState) -> Value {
    let controllers: serde_json::Map<String, Value> = b
        .controllers
        .iter()
        .map(|(name, c)| {
            (
                name.to_string(),
                json!({
                    "last_full": record(&c.last_full),
                    "last_partial": record(&c.last_partial),
                    "syncs": c.syncs,
                    "failures": c.failures,
                    "last_error": c.last_error,
                }),
            )
        })
        .collect();
    let pods: Vec<Value> = b
        .policies
        .iter()
        .flat_map(|p| p.isolated.iter())
        .map(|i| {
            json!({
                "pod": i.pod,
                "ips": i.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "ingress": i.ingress,
                "egress": i.egress,
                "admin": {"ingress": i.admin_ingress, "egress": i.admin_egress},
                "baseline": {"ingress": i.baseline_ingress, "egress": i.baseline_egress},
            })
        })
        .collect();
    let policies: Vec<Value> = b
        .policies
        .iter()
        .flat_map(|p| p.policies.iter())
        .map(|d| json!({"policy": d.policy, "ingress": d.ingress, "egress": d.egress}))
        .collect();
    let cluster_policies: Vec<Value> = b
        .policies
        .iter()
        .flat_map(|p| p.cluster_policies.iter())
        .map(|d| {
            json!({"policy": d.policy, "tier": d.tier, "priority": d.priority,
                "ingress": d.ingress, "egress": d.egress})
        })
        .collect();
    json!({
        "controllers": controllers,
        "objects": b.objects,
        "bpf": b.bpf.as_ref().map(|s| json!({"mode": s.mode, "interfaces": s.interfaces})),
        "drift": {"found": b.drift_found, "healed": b.drift_healed},
        "source_problems": b.source_problems,
        "isolated_pods": pods,
        "policies": policies,
        "cluster_policies": cluster_policies,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::document;

    /// The text is what serde_json writes for the whole object (the
    /// fields in the same order), for an object with and without fields.
    #[test]
    fn the_document_is_the_rest_then_the_virtual_services() {
        let services = vec![
            json!({"address": "10.96.0.1", "port": 80}),
            json!({"port": 53}),
        ];
        for rest in [
            json!({"ready": true, "node": "a", "objects": {"pods": 3}}),
            json!({}),
        ] {
            let text = document(rest.clone(), &services);
            let mut whole = rest.as_object().unwrap().clone();
            whole.insert("virtual_services".into(), Value::from(services.clone()));
            assert_eq!(text, serde_json::to_string(&whole).unwrap());
        }
    }
}
