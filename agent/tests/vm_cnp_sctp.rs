//! ClusterNetworkPolicy on real SCTP traffic (the truth-table harness with
//! SCTP 80 and 81 probed beside TCP and UDP). This host's kernel has no
//! SCTP sockets, so it runs only inside the VM:
//!
//!     cargo xtask vm-test -- target/debug/deps/vm_cnp_sctp-HASH --ignored --test-threads 1

mod netpol;

use netpol::{
    cluster_policy::{in_namespaces, sctp_port, ClusterPolicy},
    ns, Case,
};

/// An Admin Deny of SCTP 80 from y, and a Baseline Deny of SCTP 81 from z,
/// into x: only those cells close (a Deny drops: the probe times out);
/// TCP and UDP on the same ports stay open.
#[test]
#[ignore = "needs SCTP: run inside the VM by cargo xtask test"]
fn vm_cnp_sctp_ports_in_both_tiers() {
    Case::new("vm_cnp_sctp_ports_in_both_tiers")
        .sctp()
        .cluster_policy(
            ClusterPolicy::admin("no-sctp-80-from-y", 1, in_namespaces(ns("x"))).ingress(
                "Deny",
                &[in_namespaces(ns("y"))],
                &[sctp_port(80)],
            ),
        )
        .cluster_policy(
            ClusterPolicy::baseline("no-sctp-81-from-z", 1, in_namespaces(ns("x"))).ingress(
                "Deny",
                &[in_namespaces(ns("z"))],
                &[sctp_port(81)],
            ),
        )
        .expect(|r| {
            r.expect_on("y/*", "x/*", "sctp/80", false)
                .expect_on("z/*", "x/*", "sctp/81", false);
        })
        .run();
}
