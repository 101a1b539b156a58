//! NetworkPolicy on real packets: a truth table per case.
//!
//! Each case builds its own nodes and pods in network namespaces (see
//! netpol/topology.rs), writes the cluster and its policies as manifests,
//! runs `ipwarden run --once` in node-a, then probes every ordered pair of
//! endpoints on TCP and UDP 80 and 81 and compares what connects with the
//! expected matrix, written by hand from the NetworkPolicy API semantics
//! (modelled on the upstream e2e suite, test/e2e/network/netpol, and on
//! cyclonus). A mismatch prints the expected, observed and comparison
//! tables.
//!
//! Conventions of every matrix: rows are sources ("node" is node-a itself,
//! whose traffic to its pods is always allowed), columns destinations; a pod
//! never probes itself. Pods on node-b are never selected by a policy: the
//! agent under test programs node-a only.

mod netpol;

use netpol::{Case, Cluster};

// ---- the harness itself (no agent) ----

/// No policies and no agent: every cell connects, IPv4 and IPv6, bridged
/// pods and pods on node-b.
#[test]
fn harness_baseline_everything_connects() {
    Case::new("harness_baseline_everything_connects")
        .cluster(Cluster::xyz().on_node_b("z"))
        .dual_stack()
        .without_agent()
        .run();
}
