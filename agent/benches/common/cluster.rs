//! A generated cluster (seeded, so every run generates the same one) for
//! the benches: N pods in namespaces with `team`/`env` labels, a tenth of
//! them on this node (`node-a`), with `app`/`tier`/`role`/`version` labels
//! and named container ports by tier; M NetworkPolicies of the shapes real
//! clusters have (see [`policy_spec`]). Objects are JSON as a user writes
//! them.
#![allow(dead_code)] // each bench uses a different part

use std::net::Ipv4Addr;

use ipwarden::cluster::KubeObject;
use serde_json::{json, Value};

pub const NODE: &str = "node-a";
/// Nodes of the cluster; pods are spread evenly, a tenth on `node-a`.
pub const NODES: usize = 10;
/// Deployments per namespace (`app-0` .. `app-9`).
pub const APPS: usize = 10;
pub const TIERS: [&str; 5] = ["web", "api", "db", "cache", "worker"];
pub const ROLES: [&str; 3] = ["frontend", "backend", "batch"];
pub const TEAMS: usize = 8;
pub const ENVS: [&str; 3] = ["prod", "staging", "dev"];

// ---------------------------------------------------------------------
// The generated cluster

/// SplitMix64: small, seeded, the same sequence on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

pub fn namespace_name(i: usize) -> String {
    match i {
        0 => "kube-system".into(),
        1 => "monitoring".into(),
        _ => format!("ns-{i:02}"),
    }
}

pub fn app(k: usize) -> String {
    format!("app-{k}")
}

pub fn tier_of(k: usize) -> &'static str {
    TIERS[k % TIERS.len()]
}

pub fn team(t: usize) -> String {
    format!("team-{t}")
}

/// Named container ports by tier (what policies' named ports resolve on).
pub fn ports_of(tier: &str) -> Vec<Value> {
    let p = |name: &str, port: u16, proto: &str| json!({"name": name, "containerPort": port, "protocol": proto});
    match tier {
        "web" => vec![p("http", 8080, "TCP"), p("metrics", 9090, "TCP")],
        "api" => vec![
            p("http", 8080, "TCP"),
            p("grpc", 50051, "TCP"),
            p("metrics", 9090, "TCP"),
        ],
        "db" => vec![p("postgres", 5432, "TCP"), p("metrics", 9187, "TCP")],
        "cache" => vec![p("redis", 6379, "TCP")],
        "dns" => vec![
            p("dns", 53, "UDP"),
            p("dns-tcp", 53, "TCP"),
            p("metrics", 9153, "TCP"),
        ],
        _ => vec![p("metrics", 9090, "TCP")],
    }
}

/// One pod as a manifest would have it.
pub fn pod_json(
    ns: &str,
    name: &str,
    labels: &Value,
    node: &str,
    ip: Ipv4Addr,
    tier: &str,
) -> Value {
    json!({
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "main", "ports": ports_of(tier)}]},
        "status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]},
    })
}

pub fn pod_object(v: Value) -> KubeObject {
    KubeObject::Pod(Box::new(serde_json::from_value(v).expect("pod")))
}

/// Pod `i`'s namespace index, deployment and labels.
pub fn pod_labels(i: usize, namespaces: usize, rng: &mut Rng) -> (usize, usize, Value) {
    let ns = i % namespaces;
    let k = (i / namespaces) % APPS;
    let mut labels = json!({
        "app": app(k),
        "tier": tier_of(k),
        "role": *rng.pick(&ROLES),
        "pod-template-hash": format!("{:08x}", rng.next() as u32),
    });
    if rng.below(2) == 0 {
        labels["version"] = json!(if rng.below(3) == 0 { "v2" } else { "v1" });
    }
    match (ns, k) {
        (0, 0) => {
            labels["k8s-app"] = json!("kube-dns");
            labels["tier"] = json!("dns");
        }
        (1, 0) => labels["app"] = json!("prometheus"),
        _ => {}
    }
    (ns, k, labels)
}

/// The generated cluster as the API server would serve it (without the
/// fields the server adds).
pub struct Generated {
    pub namespaces: Vec<Value>,
    pub pods: Vec<Value>,
    pub policies: Vec<Value>,
}

impl Generated {
    /// Every object, namespaces first, as the policy controller reads them.
    pub fn objects(&self) -> Vec<KubeObject> {
        let namespaces = self.namespaces.iter().map(|v| {
            KubeObject::Namespace(Box::new(
                serde_json::from_value(v.clone()).expect("namespace"),
            ))
        });
        let pods = self.pods.iter().cloned().map(pod_object);
        let policies = self.policies.iter().map(|v| {
            KubeObject::NetworkPolicy(Box::new(serde_json::from_value(v.clone()).expect("policy")))
        });
        namespaces.chain(pods).chain(policies).collect()
    }
}

pub fn generate(pods: usize, policies: usize, namespaces: usize, seed: u64) -> Generated {
    let mut rng = Rng(seed);
    let mut out = Generated {
        namespaces: Vec::new(),
        pods: Vec::new(),
        policies: Vec::new(),
    };
    for i in 0..namespaces {
        let name = namespace_name(i);
        let labels = json!({"team": team(i % TEAMS), "env": ENVS[i % ENVS.len()]});
        out.namespaces
            .push(json!({"metadata": {"name": name, "labels": labels}}));
    }
    // Exactly a tenth of the pods on this node, chosen by a seeded shuffle.
    let mut order: Vec<usize> = (0..pods).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    let mut node_of = vec![0usize; pods];
    for (rank, &i) in order.iter().enumerate() {
        node_of[i] = rank % NODES;
    }
    // Each node has a /21 of pod addresses: 10.244.0.0/21 is node-a's.
    let mut next_on_node = [2u32; NODES];
    for (i, &n) in node_of.iter().enumerate() {
        let (ns, k, labels) = pod_labels(i, namespaces, &mut rng);
        let ip = Ipv4Addr::from(
            u32::from(Ipv4Addr::new(10, 244, 0, 0)) + n as u32 * 2048 + next_on_node[n],
        );
        next_on_node[n] += 1;
        let tier = labels["tier"].as_str().unwrap_or("worker").to_string();
        let name = format!("{}-{i}", app(k));
        out.pods.push(pod_json(
            &namespace_name(ns),
            &name,
            &labels,
            &node_name(n),
            ip,
            &tier,
        ));
    }
    for p in 0..policies {
        let ns = p % namespaces;
        let spec = policy_spec(&mut rng, namespaces);
        out.policies.push(json!({
            "metadata": {"namespace": namespace_name(ns), "name": format!("policy-{p}")},
            "spec": spec,
        }));
    }
    out
}

/// Node `n`'s name: `node-a` (this node) for 0, then `node-b`, ...
pub fn node_name(n: usize) -> String {
    format!("node-{}", (b'a' + n as u8) as char)
}

pub fn match_app(k: usize) -> Value {
    json!({"matchLabels": {"app": app(k)}})
}

/// One policy of a shape picked by weight (percent in the comments).
pub fn policy_spec(rng: &mut Rng, namespaces: usize) -> Value {
    let a = rng.below(APPS);
    let b = rng.below(APPS);
    let roll = rng.below(100);
    match roll {
        // 6: default deny ingress for the whole namespace.
        0..=5 => json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        // 24: app b may reach app a, numeric or named ports.
        6..=29 => {
            let ports = match rng.below(3) {
                0 => json!([{"port": 8080}]),
                1 => json!([{"port": "http"}]),
                _ => {
                    json!([{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": "metrics"}])
                }
            };
            json!({
                "podSelector": match_app(a),
                "ingress": [{"from": [{"podSelector": match_app(b)}], "ports": ports}],
            })
        }
        // 14: frontends of another team's namespaces (both selectors).
        30..=43 => {
            let ports = if rng.below(2) == 0 {
                json!([{"port": "http"}])
            } else {
                json!([{"port": 8080, "endPort": 8090}])
            };
            json!({
                "podSelector": {"matchLabels": {"tier": tier_of(a)}},
                "ingress": [{
                    "from": [{
                        "namespaceSelector": {"matchLabels": {"team": team(rng.below(TEAMS))}},
                        "podSelector": {"matchLabels": {"role": "frontend"}},
                    }],
                    "ports": ports,
                }],
            })
        }
        // 10: Prometheus in the monitoring namespace scrapes named ports.
        44..=53 => json!({
            "podSelector": {"matchExpressions": [
                {"key": "app", "operator": "In", "values": [app(a), app(b)]},
            ]},
            "ingress": [{
                "from": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                    "podSelector": {"matchLabels": {"app": "prometheus"}},
                }],
                "ports": [{"port": "metrics"}],
            }],
        }),
        // 10: address blocks with excepts, a NodePort-like range.
        54..=63 => {
            let x = rng.below(200) + 1;
            json!({
                "podSelector": match_app(a),
                "ingress": [{
                    "from": [
                        {"ipBlock": {"cidr": "192.168.0.0/16", "except": [
                            format!("192.168.{x}.0/24"), format!("192.168.{}.0/24", x + 1),
                        ]}},
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}},
                        {"ipBlock": {"cidr": format!("172.16.{x}.0/24")}},
                    ],
                    "ports": [{"protocol": "TCP", "port": 30000, "endPort": 30000 + rng.below(500) as i32 + 1}],
                }],
            })
        }
        // 14: egress of web and api pods: DNS, the namespace's databases
        // by named port, HTTPS to the internet minus private ranges.
        64..=77 => json!({
            "podSelector": {"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "api"]},
            ]},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    }],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                },
                {"to": [{"podSelector": {"matchLabels": {"tier": "db"}}}], "ports": [{"port": "postgres"}]},
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}],
                    "ports": [{"protocol": "TCP", "port": 443}],
                },
            ],
        }),
        // 12: both directions, NotIn/In expressions, endPort, named egress.
        78..=89 => json!({
            "podSelector": {
                "matchLabels": {"app": app(a)},
                "matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["batch"]}],
            },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [{"podSelector": {"matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["web", "api"]},
                ]}}],
                "ports": [{"port": 8000, "endPort": 8100}],
            }],
            "egress": [{
                "to": [{
                    "namespaceSelector": {"matchLabels": {"team": team(rng.below(TEAMS))}},
                    "podSelector": {"matchLabels": {"tier": "api"}},
                }],
                "ports": [{"port": "grpc"}, {"protocol": "UDP", "port": 5353}],
            }],
        }),
        // 10: Exists / DoesNotExist, namespaces by expression, UDP and SCTP.
        _ => json!({
            "podSelector": {
                "matchLabels": {"app": app(a)},
                "matchExpressions": [{"key": "version", "operator": "Exists"}],
            },
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchExpressions": [
                                {"key": "env", "operator": "In", "values": ["prod"]},
                                {"key": "team", "operator": "NotIn", "values": [team(rng.below(TEAMS))]},
                            ]},
                            "podSelector": {"matchLabels": {"role": "frontend", "app": app(b)}},
                        },
                        {"podSelector": {"matchExpressions": [{"key": "version", "operator": "DoesNotExist"}]}},
                    ],
                    "ports": [{"protocol": "UDP", "port": 5000 + rng.below(namespaces) as i32}, {"protocol": "SCTP", "port": 9999}],
                },
                {"from": [{"podSelector": {}}]},
            ],
        }),
    }
}
