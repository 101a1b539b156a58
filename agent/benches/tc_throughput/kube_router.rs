//! The kube-router node's top chains as kube-router writes them: a walk of
//! one jump per isolated local pod address in KUBE-ROUTER-INPUT, -FORWARD
//! and -OUTPUT (its `pod.go`), after the same RETURN rules in INPUT. The
//! pod and policy chains below stay the controller's; ipwarden's own node
//! runs what the controller renders (the guarded-pod sets and dispatch).
//! kube-router's FORWARD also has `--physdev-is-bridged` twins of each
//! jump; they are left out, which can only flatter the kube-router node.

use ipwarden::{
    controllers::fragments::host,
    controllers::policies::{
        describe::Isolation,
        names::{
            self, CHAIN_FORWARD, CHAIN_FROM_POD, CHAIN_INPUT, CHAIN_OUTPUT, CHAIN_TO_POD,
            SET_GUARDED_EGRESS, SET_GUARDED_INGRESS,
        },
        PolicyState,
    },
    desired::{Family, TablePlan},
};

/// `state` with kube-router's top chains in place of the dispatch.
pub fn with_kube_router_top_chains(mut state: PolicyState) -> PolicyState {
    let isolated = std::mem::take(&mut state.isolated);
    for plan in &mut state.iptables {
        walk(plan, &isolated);
    }
    state.isolated = isolated;
    state.sets.retain(|s| {
        !s.name.ends_with(SET_GUARDED_INGRESS) && !s.name.ends_with(SET_GUARDED_EGRESS)
    });
    state
}

fn walk(plan: &mut TablePlan, isolated: &[Isolation]) {
    let family = plan.family;
    // The dispatch chains and their buckets.
    plan.chains
        .retain(|c| !c.name.starts_with(CHAIN_TO_POD) && !c.name.starts_with(CHAIN_FROM_POD));
    let returns: Vec<String> = plan
        .chains
        .iter()
        .filter(|c| c.name == CHAIN_INPUT)
        .flat_map(|c| c.rules.iter())
        .filter(|r| r.ends_with("-j RETURN") && !r.contains("--match-set"))
        .cloned()
        .collect();
    let (mut input, mut forward, mut output) = (returns, Vec::new(), Vec::new());
    for pod in isolated {
        let (namespace, name) = pod.pod.split_once('/').expect("namespace/name");
        let chain = names::pod_chain(namespace, name);
        let ingress = !(pod.ingress.is_empty()
            && pod.admin_ingress.is_empty()
            && pod.baseline_ingress.is_empty());
        let egress = !(pod.egress.is_empty()
            && pod.admin_egress.is_empty()
            && pod.baseline_egress.is_empty());
        for ip in pod.ips.iter().filter(|ip| Family::of(ip) == family) {
            let ip = host(ip);
            if ingress {
                forward.push(format!("-d {ip} -j {chain}"));
                output.push(format!("-d {ip} -j {chain}"));
            }
            if egress {
                input.push(format!("-s {ip} -j {chain}"));
                forward.push(format!("-s {ip} -j {chain}"));
                output.push(format!("-s {ip} -j {chain}"));
            }
        }
    }
    for c in &mut plan.chains {
        match c.name.as_str() {
            CHAIN_INPUT => c.rules = std::mem::take(&mut input),
            CHAIN_FORWARD => c.rules = std::mem::take(&mut forward),
            CHAIN_OUTPUT => c.rules = std::mem::take(&mut output),
            _ => {}
        }
    }
}
