//! One case: a cluster and its policies, a fresh topology, the agent run
//! once in node-a (a step a case can leave out), every cell probed, and
//! the observation compared with the hand-written expectation.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use ipwarden::{
    cluster::manifests,
    netns::{privileged, NetNs},
};

use super::{
    manifest::{render_yaml, Cluster, Node, Policy},
    matrix::{self, Family, Observed, Proto, Reachability, NODE},
    probe::{self, Source, Target},
    topology::{netns_path, Mode, Topology},
};

const AGENT: &str = env!("CARGO_BIN_EXE_ipwarden");

type Hook = Box<dyn Fn(&Topology)>;
type Expect = Box<dyn Fn(&mut Reachability)>;

pub struct Case {
    name: &'static str,
    cluster: Cluster,
    policies: Vec<Policy>,
    /// ClusterNetworkPolicies (and any other document) after the policies.
    extra: Vec<serde_json::Value>,
    mode: Mode,
    families: Vec<Family>,
    protos: Vec<Proto>,
    agent: bool,
    before_probe: Option<Hook>,
    expect: Option<Expect>,
}

/// What a case saw, for cases that check more than the matrix.
pub struct Run {
    pub matrix: Reachability,
    pub observed: Observed,
    pub topology: Topology,
    pub timings: Timings,
}

#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub topology: Duration,
    pub agent: Duration,
    pub probes: Duration,
    pub cells: usize,
}

impl Case {
    /// The standard cluster (x, y, z x a, b, c on node-a), bridged, IPv4
    /// probes on TCP and UDP, the agent run, everything expected to connect.
    pub fn new(name: &'static str) -> Case {
        Case {
            name,
            cluster: Cluster::xyz(),
            policies: Vec::new(),
            extra: Vec::new(),
            mode: Mode::Bridge,
            families: vec![Family::V4],
            protos: Proto::TCP_UDP.to_vec(),
            agent: true,
            before_probe: None,
            expect: None,
        }
    }

    pub fn cluster(mut self, cluster: Cluster) -> Case {
        self.cluster = if self.protos.contains(&Proto::Sctp) {
            cluster.with_sctp_ports()
        } else {
            cluster
        };
        self
    }

    pub fn policy(mut self, policy: Policy) -> Case {
        self.policies.push(policy);
        self
    }

    pub fn cluster_policy(self, policy: super::cluster_policy::ClusterPolicy) -> Case {
        self.cluster_policy_json(policy.to_json())
    }

    /// A ClusterNetworkPolicy as written (a broken one, say).
    pub fn cluster_policy_json(mut self, policy: serde_json::Value) -> Case {
        self.extra.push(policy);
        self
    }

    /// node-a without a bridge: routed pods with host routes.
    pub fn routed(mut self) -> Case {
        self.mode = Mode::Routed;
        self
    }

    /// Probe IPv6 too.
    pub fn dual_stack(mut self) -> Case {
        self.families = vec![Family::V4, Family::V6];
        self
    }

    /// Probe SCTP 80 and 81 too (servers in every pod, container ports
    /// serve-80-sctp and serve-81-sctp). Needs a kernel with SCTP sockets:
    /// such cases run in the VM (vm_netpol_sctp.rs); on a kernel without,
    /// building the topology fails and says so.
    pub fn sctp(mut self) -> Case {
        if !self.protos.contains(&Proto::Sctp) {
            self.protos.push(Proto::Sctp);
        }
        self.cluster = self.cluster.with_sctp_ports();
        self
    }

    /// Leave out `ipwarden run` (proves the harness on its own).
    pub fn without_agent(mut self) -> Case {
        self.agent = false;
        self
    }

    /// Runs in node-a after the agent, before probing.
    pub fn before_probe(mut self, hook: impl Fn(&Topology) + 'static) -> Case {
        self.before_probe = Some(Box::new(hook));
        self
    }

    /// The expected truth table, starting from "everything connects".
    pub fn expect(mut self, expect: impl Fn(&mut Reachability) + 'static) -> Case {
        self.expect = Some(Box::new(expect));
        self
    }

    /// Runs the case and fails with the truth tables on any mismatch.
    pub fn run(self) {
        let cluster = self.cluster.summary();
        let mut docs: Vec<_> = self.policies.iter().map(Policy::to_json).collect();
        docs.extend(self.extra.iter().cloned());
        let policies = render_yaml(&docs);
        let Some(run) = self.observe() else {
            return;
        };
        if let Err(report) = run.matrix.compare(&run.observed) {
            panic!("{report}\nthe cluster:\n{cluster}\nthe policies:\n{policies}");
        }
    }

    /// The expected matrix: sources are node-a and every pod with a
    /// namespace of its own, destinations every running pod (hostNetwork
    /// ones too), in the cluster's order; everything connects unless the
    /// case's expectation says otherwise.
    pub fn matrix(&self) -> Reachability {
        let mut names = vec![NODE.to_string()];
        names.extend(
            self.cluster
                .pods
                .iter()
                .filter(|p| p.has_own_netns())
                .map(|p| p.id()),
        );
        let probed: Vec<_> = self.cluster.pods.iter().filter(|p| p.is_probed()).collect();
        let mut skipped = BTreeSet::new();
        for (s, source) in names.iter().enumerate() {
            for (t, pod) in probed.iter().enumerate() {
                let own_node = source == NODE && pod.host_network && pod.node == Node::A;
                if *source == pod.id() || own_node {
                    skipped.insert((s, t));
                }
            }
        }
        let mut matrix = Reachability::new(
            names,
            probed.iter().map(|p| p.id()).collect(),
            matrix::traffic(&self.families, &self.protos),
            skipped,
        );
        matrix.denials_may_drop = self
            .extra
            .iter()
            .any(|d| d["kind"] == "ClusterNetworkPolicy");
        if let Some(expect) = &self.expect {
            expect(&mut matrix);
        }
        matrix
    }

    /// The manifests parse with the agent's own reader, every object of
    /// the case kept (no privileges needed).
    pub fn check_manifests(&self) {
        let mut loaded = manifests::Loaded::default();
        manifests::parse_text(Path::new(self.name), &self.rendered(), &mut loaded);
        assert!(
            loaded.problems.is_empty(),
            "{}: {:?}\n{}",
            self.name,
            loaded.problems,
            self.rendered()
        );
        let expected = self.cluster.namespaces.len()
            + self.cluster.pods.len()
            + self.policies.len()
            + self.extra.len();
        assert_eq!(loaded.objects.len(), expected, "{}", self.name);
    }

    /// The YAML the agent reads.
    pub fn rendered(&self) -> String {
        let mut yaml = self.cluster.render(&self.policies);
        if !self.extra.is_empty() {
            yaml.push_str("---\n");
            yaml.push_str(&render_yaml(&self.extra));
        }
        yaml
    }

    /// Builds, runs and probes; `None` when the case is skipped (not root,
    /// or no NetworkPolicy controller in the agent yet).
    pub fn observe(self) -> Option<Run> {
        if !privileged(self.name) {
            return None;
        }
        let start = Instant::now();
        let topology = Topology::build(&self.cluster, self.mode, &self.protos)
            .unwrap_or_else(|e| panic!("{}: building the topology: {e}", self.name));
        let built = Instant::now();
        if self.agent {
            run_agent(self.name, &topology.node_a, &self.rendered());
        }
        let agent_done = Instant::now();
        if let Some(hook) = &self.before_probe {
            hook(&topology);
        }

        let matrix = self.matrix();
        let sources: Vec<Source> = matrix
            .sources
            .iter()
            .map(|name| {
                let ns = if name == NODE {
                    &topology.node_a
                } else {
                    topology
                        .pod_netns(name)
                        .expect("a source pod has a namespace")
                };
                Source {
                    netns: netns_path(ns),
                }
            })
            .collect();
        let targets: Vec<Target> = matrix
            .targets
            .iter()
            .map(|id| {
                let pod = self.cluster.pod(id);
                Target {
                    name: pod.id(),
                    v4: pod.v4.into(),
                    v6: pod.v6.into(),
                }
            })
            .collect();
        let observed = probe::probe_all(&matrix, &sources, &targets);
        let done = Instant::now();
        let timings = Timings {
            topology: built - start,
            agent: agent_done - built,
            probes: done - agent_done,
            cells: observed.len(),
        };
        eprintln!(
            "{}: topology {:?}, agent {:?}, {} probes {:?}, total {:?}",
            self.name,
            timings.topology,
            timings.agent,
            timings.cells,
            timings.probes,
            done - start
        );
        Some(Run {
            matrix,
            observed,
            topology,
            timings,
        })
    }
}

/// `ip netns exec NODE ipwarden run --manifests CASE.yaml --once
/// --node-name node-a --run-service-proxy=false`, plus any arguments in
/// IPWARDEN_NETPOL_AGENT_ARGS (split on whitespace).
fn run_agent(test: &str, node: &NetNs, yaml: &str) {
    let path = std::env::temp_dir().join(format!("{}.yaml", node.name()));
    std::fs::write(&path, yaml).unwrap();
    let extra = std::env::var("IPWARDEN_NETPOL_AGENT_ARGS").unwrap_or_default();
    let out = node
        .command(AGENT)
        .arg("run")
        .arg("--manifests")
        .arg(&path)
        .args([
            "--once",
            "--node-name",
            "node-a",
            "--run-service-proxy=false",
        ])
        .args(extra.split_whitespace())
        .output()
        .expect("starting ipwarden run");
    assert!(
        out.status.success(),
        "{test}: ipwarden run --once failed ({}), manifests kept in {}:\nstdout:\n{}\nstderr:\n{}",
        out.status,
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&path);
}
