//! The receiver namespaces: a veth from the sender, the sets and chains
//! of each configuration written as the agent writes them, an iperf3
//! server.

use std::{
    process::{Command, Stdio},
    time::Instant,
};

use ipwarden::{
    cluster::Snapshot,
    controllers::{
        policies,
        services::{self, names::SET_SVIP_PRT},
    },
    desired::{ServiceState, Table},
    kernel::{ipset::IpsetClient, iptables},
    netns::NetNs,
    reconcile::{self, services_owner, SERVICES_OWNER},
    store::SetStore,
};

use super::{
    cluster::{policy_options, snapshot, v4_of, v6_of},
    config::{Config, Receiver},
    cpu::cpus,
    kube_router::with_kube_router_top_chains,
    split, TCP_PORT,
};

/// A receiver namespace per configuration of `configs`, joined to
/// `sender` and programmed; a configuration's receiver always has the
/// same addresses (`Config::index`). Returns them with the service state of the first.
pub fn receivers(sender: &NetNs, configs: &[Config]) -> (Vec<Receiver>, ServiceState) {
    let mut out = Vec::new();
    let mut service_state = None;
    for &config in configs {
        let i = config.index();
        let ns = NetNs::new(&format!("ipw-bench-rx{i}")).expect("netns");
        let (v4, v6) = (v4_of(i), v6_of(i));
        let peer4 = format!("10.201.{}.2/24", i + 1);
        let peer6 = format!("fd00:201:{:x}::2/64", i + 1);
        sender
            .veth_to(
                &ns,
                (&format!("vb{i}"), &[peer4.as_str(), peer6.as_str()]),
                ("veth0", &[&format!("{v4}/24"), &format!("{v6}/64")]),
            )
            .expect("veth pair");
        let t = Instant::now();
        let state = program_node(&ns, config, &snapshot(i, Config::EVERY.len()));
        eprintln!(
            "tc bench: {} ready in {:.1} s ({} members in svip-prt)",
            config.short(),
            t.elapsed().as_secs_f64(),
            svip_prt_members(&state)
        );
        service_state.get_or_insert(state);
        let iperf = ns
            .run(|| {
                let mut cmd = Command::new("iperf3");
                cmd.args(["-s", "-B", &v4.to_string(), "-p", &TCP_PORT.to_string()]);
                if cpus() >= 2 {
                    cmd.args(["-A", "1"]);
                }
                cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()
            })
            .expect("netns")
            .expect("start iperf3 -s (apt-get install iperf3)");
        out.push(Receiver {
            config,
            ns,
            v4,
            v6,
            iperf,
        });
    }
    (out, service_state.expect("at least one receiver"))
}

/// Sets and chains of `config`, written inside `ns` as a pass would: the
/// service sets and filter chains, then the policy sets and chains.
/// Returns the service state (its sets feed the mirror).
pub fn program_node(ns: &NetNs, config: Config, snap: &Snapshot) -> ServiceState {
    let state = services::desired_with(
        snap,
        &services::Options {
            bpf: config.bpf_rules(),
            ..Default::default()
        },
    );
    assert!(
        state.problems.is_empty(),
        "generated Services with problems: {:?}",
        &state.problems[..state.problems.len().min(3)]
    );
    if !config.has_service_rules() {
        split::write_step_rules(ns, config, &state);
        return state;
    }
    ns.run(|| {
        let store = SetStore::new(IpsetClient::new().expect("ipset socket"));
        store.register(services_owner()).expect("owner");
        let report = store
            .apply(SERVICES_OWNER, state.sets.clone())
            .expect("service sets");
        assert!(report.verified, "service sets did not verify");
        // The nat plans match IPVS connections: this host has no IPVS, and
        // they see none of this traffic anyway.
        for plan in state.iptables.iter().filter(|p| p.table == Table::Filter) {
            iptables::apply(plan).expect("service chains");
        }
        if config.has_policies() {
            let mut pstate = policies::desired(snap, &policy_options());
            assert!(pstate.problems.is_empty(), "{:?}", pstate.problems);
            if config == Config::KubeRouterNode {
                pstate = with_kube_router_top_chains(pstate);
            }
            store
                .register(reconcile::policies::policies_owner())
                .expect("owner");
            reconcile::policies::apply(&store, &pstate).expect("policies");
        }
    })
    .expect("netns");
    state
}

pub fn svip_prt_members(state: &ServiceState) -> usize {
    state
        .sets
        .iter()
        .filter(|s| s.name.ends_with(SET_SVIP_PRT))
        .map(|s| s.members.len())
        .sum()
}
