//! The policy controller against kube-router's way of syncing network
//! policies, on a generated cluster, each side in a fresh network
//! namespace per round. Needs root:
//!
//! ```text
//! cargo bench -p ipwarden --bench policies
//! ```
//!
//! The cluster (seeded, so every run generates the same one): N pods in
//! namespaces with `team`/`env` labels, a tenth of them on this node
//! (`node-a`), with `app`/`tier`/`role`/`version` labels and named
//! container ports by tier; M NetworkPolicies of the shapes real clusters
//! have: default deny, app-to-app with numeric or named ports,
//! cross-namespace (namespaceSelector AND podSelector), scrapes from the
//! monitoring namespace, ipBlocks with excepts and endPort ranges, egress
//! to DNS, databases and the internet minus private ranges, matchExpressions
//! of every operator. Both filter tables hold some foreign rules (a
//! kube-proxy and a CNI), as on a node.
//!
//! Measured, interleaved round by round (the side that goes first
//! alternates):
//!
//! - **ours**: a full sync is `controllers::policies::desired` (compute),
//!   then `reconcile::policies::apply_sets` (the set store) and
//!   `apply_chains` (one `iptables-restore --noflush` per family of the
//!   changed chains), from an empty namespace and again (no-op); a partial
//!   sync, as the daemon runs it for one changed pod, is
//!   `PolicyIndex::update` with that pod (compute), then the delta's sets
//!   (`apply_delta_sets`: new sets and members through the store's member
//!   path) and chains (`apply_delta_chains`: one partial
//!   `iptables-restore --noflush` per family naming only the moved chains
//!   and lines, then `destroy_unused_sets`), for one remote pod's `role`
//!   label flipped and back (set members only: the bench asserts no chain
//!   is written and only ipset add/del happen), and one local pod added
//!   and removed (its chain and jump lines); after each of the last two a
//!   full sync must find nothing to write;
//! - **kube-router's way**, on the same content: compute, then what its
//!   network policy controller does per sync: `iptables-save -t filter` of
//!   each family, `ipset save`, `ipset restore -exist` of every policy set
//!   through its temporary-set pattern (`buildIPSetRestore`: one TMP set
//!   per set options, add every member to it, create the real set, swap,
//!   flush the TMP set; destroy the TMP sets at the end), and
//!   `iptables-restore` (no `--noflush`) of the whole filter table of each
//!   family: the saved foreign chains and rules with our chains and jumps
//!   rendered in, as its buffer holds them. It has no diff, so its no-op
//!   costs what a change costs; the full sync and the pod change are
//!   measured.
//!
//! `IPWARDEN_BENCH_CLUSTER_POLICIES=N` adds N ClusterNetworkPolicies
//! (Admin and Baseline, namespace and pod subjects, Accept/Deny/Pass,
//! networks and ports) to the cluster and measures only ours: a full sync
//! from empty, the no-op, then one pod label change and back and one local
//! pod added and removed, each twice in the same round: as a whole
//! recompute and apply (what the daemon did while the index did not know
//! the tiers) and as the partial sync it does now (`PolicyIndex::update`
//! and the delta), a full sync after each partial one finding nothing to
//! write.
//!
//! `IPWARDEN_BENCH_PODS` (default 5000), `IPWARDEN_BENCH_POLICIES` (1000),
//! `IPWARDEN_BENCH_NAMESPACES` (50), `IPWARDEN_BENCH_RUNS` (7) and
//! `IPWARDEN_BENCH_SEED` (1) tune it. Prints markdown tables of medians
//! and the target checks. `IPWARDEN_BENCH_COMPUTE_ONLY=N` only times N
//! runs each of `desired`, `PolicyIndex::build`, `PolicyIndex::state` and
//! the catch-up of a no-op full sync (`changes_since` + `update`) on the
//! generated cluster (no kernel, no root), for profiling the controller
//! under `perf`, and `local_pod`: the updates of a local pod added and
//! removed (with `IPWARDEN_BENCH_CLUSTER_POLICIES`, the cluster has them);
//! `IPWARDEN_BENCH_COMPUTE_ONLY_STEP=build` (or `desired`, `state`,
//! `catch_up`, `local_pod`) times that step alone.

mod common;

use common::{env_list, median, ratio};
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use ipwarden::{
    cluster::{
        compact::{Keep, Pod, Stored},
        HostInfo, KubeObject, Snapshot,
    },
    controllers::policies::{
        self,
        incremental::{PolicyChanges, PolicyIndex},
        Options, PolicyState,
    },
    desired::{Family, SetSpec, Table, TablePlan},
    kernel::{
        ipset::{IpsetClient, SetName},
        iptables,
    },
    netns::{privileged, NetNs},
    reconcile::{
        dataplane::RealDataplane,
        policies::{
            apply_chains, apply_delta_chains, apply_delta_sets, apply_sets, destroy_unused_sets,
            policies_owner, PolicyReport, POLICIES_OWNER,
        },
    },
    store::SetStore,
};

use common::cluster::{generate as generate_cluster, pod_json, pod_object, NODE, NODES};

/// The generated cluster as the controllers see it from `node-a`.
fn generate(pods: usize, policies: usize, namespaces: usize, seed: u64) -> Snapshot {
    Snapshot::from_objects(
        generate_cluster(pods, policies, namespaces, seed).objects(),
        HostInfo {
            node_name: NODE.into(),
            local_addresses: vec!["192.168.56.10".parse().expect("address")],
        },
    )
}

fn pod_key(p: &Pod) -> (String, String) {
    let (ns, name) = p.key();
    (ns.to_string(), name.to_string())
}

fn is_local(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE)
}

fn label<'p>(p: &'p Pod, key: &str) -> Option<&'p str> {
    p.metadata.labels.get(key)
}

/// The base snapshot with one remote pod's `role` flipped between
/// frontend and backend: the first such pod whose flip changes set
/// members and no chain.
fn pod_change(base: &Snapshot, base_state: &PolicyState, opts: &Options) -> (Snapshot, String) {
    for (i, p) in base.pods.iter().enumerate() {
        let system = matches!(
            p.metadata.namespace.as_deref(),
            Some("kube-system" | "monitoring")
        );
        if system || is_local(p) || label(p, "role") != Some("frontend") {
            continue;
        }
        let mut changed = base.clone();
        std::sync::Arc::make_mut(&mut changed.pods.make_mut()[i])
            .metadata
            .labels
            .insert("role", "backend");
        let st = policies::desired(&changed, opts);
        if st.iptables == base_state.iptables && st.sets != base_state.sets {
            let (ns, name) = pod_key(p);
            return (changed, format!("{ns}/{name}"));
        }
    }
    panic!("no remote pod whose role change alters set members only");
}

/// The base snapshot plus one pod on this node, a copy of a local pod's
/// labels (so the same policies isolate it) at a fresh address.
fn local_pod_added(base: &Snapshot) -> (Snapshot, String) {
    let model = base
        .pods
        .iter()
        .find(|p| is_local(p) && label(p, "tier") == Some("api"))
        .or_else(|| base.pods.iter().find(|p| is_local(p)))
        .expect("a local pod");
    let (ns, _) = pod_key(model);
    let labels = serde_json::Value::Object(
        model
            .metadata
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect(),
    );
    let tier = label(model, "tier").unwrap_or("worker");
    let name = "added-0".to_string();
    let v = pod_json(
        &ns,
        &name,
        &labels,
        NODE,
        Ipv4Addr::new(10, 244, 7, 250),
        tier,
    );
    let KubeObject::Pod(pod) = pod_object(v) else {
        unreachable!()
    };
    let pod = pod.keep();
    let mut s = base.clone();
    let key = pod_key(&pod);
    let at = s.pods.partition_point(|p| pod_key(p) < key);
    s.pods.make_mut().insert(at, std::sync::Arc::new(pod));
    (s, format!("{ns}/{name}"))
}

// ---------------------------------------------------------------------
// Foreign rules: a kube-proxy and a CNI, in both filter tables

/// 6 + 2 x `cni` rules; `v6` picks addresses of that family.
fn foreign_rules(v6: bool, cni: usize) -> String {
    let lo = if v6 { "::1/128" } else { "127.0.0.0/8" };
    let net = |i: usize| {
        if v6 {
            format!("fd00:10:244:{i:x}::/64")
        } else {
            format!("10.244.{i}.0/24")
        }
    };
    let mut s = String::from(
        "*filter\n:KUBE-FIREWALL - [0:0]\n:KUBE-FORWARD - [0:0]\n:CNI-FORWARD - [0:0]\n\
         -A INPUT -j KUBE-FIREWALL\n-A FORWARD -j KUBE-FORWARD\n-A FORWARD -j CNI-FORWARD\n\
         -A OUTPUT -j KUBE-FIREWALL\n",
    );
    let _ = writeln!(
        s,
        "-A KUBE-FIREWALL ! -s {lo} -d {lo} -m comment --comment \"block incoming localnet connections\" -j DROP"
    );
    s.push_str(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n",
    );
    for i in 0..cni {
        let _ = writeln!(s, "-A CNI-FORWARD -s {} -j ACCEPT", net(i));
        let _ = writeln!(s, "-A CNI-FORWARD -d {} -j ACCEPT", net(i));
    }
    s.push_str("COMMIT\n");
    s
}

const CNI_NETS: usize = 22;

fn foreign_count() -> usize {
    6 + 2 * CNI_NETS
}

fn restore(cmd: &str, args: &[&str], input: &str) {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn output(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn add_foreign_rules() {
    restore(
        "iptables-restore",
        &["--noflush", "-w"],
        &foreign_rules(false, CNI_NETS),
    );
    restore(
        "ip6tables-restore",
        &["--noflush", "-w"],
        &foreign_rules(true, CNI_NETS),
    );
}

fn save_cmd(f: Family) -> &'static str {
    match f {
        Family::V4 => "iptables-save",
        Family::V6 => "ip6tables-save",
    }
}

fn restore_cmd(f: Family) -> &'static str {
    match f {
        Family::V4 => "iptables-restore",
        Family::V6 => "ip6tables-restore",
    }
}

/// `-A` lines of `iptables-save -t filter` and `ip6tables-save -t filter`.
fn filter_rules() -> (usize, usize) {
    let count = |f| {
        output(save_cmd(f), &["-t", "filter"])
            .lines()
            .filter(|l| l.starts_with("-A "))
            .count()
    };
    (count(Family::V4), count(Family::V6))
}

// ---------------------------------------------------------------------
// Ours

#[derive(Default, Clone, Copy)]
struct Split {
    compute: Duration,
    sets: Duration,
    chains: Duration,
}

impl Split {
    fn total(&self) -> Duration {
        self.compute + self.sets + self.chains
    }
    fn kernel(&self) -> Duration {
        self.sets + self.chains
    }
}

/// Medians of one sync of ours.
struct Medians {
    compute: Duration,
    sets: Duration,
    chains: Duration,
    total: Duration,
    kernel: Duration,
}

fn ours(store: &SetStore, snap: &Snapshot, opts: &Options) -> (Split, PolicyState, PolicyReport) {
    let start = Instant::now();
    let state = policies::desired(snap, opts);
    let compute = start.elapsed();
    let mut report = PolicyReport::default();
    let mut dp = RealDataplane::connect(store.clone()).expect("netlink sockets");
    let start = Instant::now();
    apply_sets(&mut dp, &state, &mut report).expect("apply sets");
    let sets = start.elapsed();
    let start = Instant::now();
    apply_chains(&mut dp, &state, &mut report).expect("apply chains");
    let chains = start.elapsed();
    (
        Split {
            compute,
            sets,
            chains,
        },
        state,
        report,
    )
}

/// A partial sync after the sync `index` describes: what the daemon does
/// for a change of `changed` (one pod): the index updated with that pod
/// alone (compute), then the delta written: members and new sets (sets),
/// the moved chains and lines and the sets left unused (iptables).
fn ours_partial(
    store: &SetStore,
    index: &mut PolicyIndex,
    snap: &Snapshot,
    changed: &str,
) -> (Split, PolicyReport) {
    let (ns, name) = changed.split_once('/').expect("ns/name");
    let changes = PolicyChanges {
        pods: [(ns.to_string(), name.to_string())].into(),
        ..PolicyChanges::default()
    };
    let start = Instant::now();
    let delta = index.update(snap, &changes);
    let compute = start.elapsed();
    let mut report = PolicyReport::default();
    let mut dp = RealDataplane::connect(store.clone()).expect("netlink sockets");
    let start = Instant::now();
    apply_delta_sets(&mut dp, &delta, &mut report).expect("apply sets");
    let sets = start.elapsed();
    let start = Instant::now();
    apply_delta_chains(&mut dp, &delta, &mut report).expect("apply chains");
    destroy_unused_sets(&mut dp, &delta, &mut report).expect("destroy sets");
    let chains = start.elapsed();
    (
        Split {
            compute,
            sets,
            chains,
        },
        report,
    )
}

fn member_changes(r: &PolicyReport) -> usize {
    r.sets
        .as_ref()
        .map_or(0, |s| s.executed.members_added + s.executed.members_deleted)
}

fn assert_noop(r: &PolicyReport) {
    let sets = r.sets.as_ref().expect("sets report");
    assert!(
        !sets.changed() && sets.verified,
        "no-op changed sets: {:?}",
        sets.executed
    );
    assert!(
        r.chains_written.is_empty() && r.chains_deleted.is_empty() && r.jumps_rewritten.is_empty(),
        "no-op wrote chains: {r:?}"
    );
}

/// A remote pod's label change: set members only.
fn assert_members_only(r: &PolicyReport) {
    assert!(
        r.chains_written.is_empty() && r.chains_deleted.is_empty() && r.jumps_rewritten.is_empty(),
        "a remote pod's change wrote chains: {:?} {:?} {:?}",
        r.chains_written,
        r.chains_deleted,
        r.jumps_rewritten
    );
    let s = &r.sets.as_ref().expect("sets report").executed;
    assert!(
        s.created.is_empty()
            && s.replaced.is_empty()
            && s.destroyed.is_empty()
            && s.destroy_deferred.is_empty(),
        "a remote pod's change did more than add/del: {s:?}"
    );
    assert!(s.members_added + s.members_deleted > 0, "no member changed");
    assert!(r.sets.as_ref().is_some_and(|s| s.verified));
}

/// What the first round records besides times.
#[derive(Default)]
struct Facts {
    rules_v4: usize,
    rules_v6: usize,
    chains: usize,
    sets: usize,
    members: usize,
    isolated: usize,
    /// Bytes of `iptables-save -t filter` (v4, v6) after the full sync.
    save_bytes: (usize, usize),
    /// Bytes of our `--noflush` script of the full sync (both families).
    full_script_bytes: usize,
    change_members: usize,
    added_chains: Vec<String>,
    removed_chains: usize,
    kr: KrSizes,
}

#[derive(Default, Clone, Copy)]
struct OursRound {
    full: Split,
    /// `PolicyIndex::build` of the base cluster (part of a full sync).
    index_build: Duration,
    noop: Split,
    change: [Split; 2],
    added: Split,
    removed: Split,
    floors: Floors,
}

/// The reads under every apply, each timed alone in the synced state.
#[derive(Default, Clone, Copy)]
struct Floors {
    /// What the store reads per pass: the set names, then a dump of each
    /// `IPW-` set.
    store_read: Duration,
    /// One dump of every set with its members, for comparison.
    list_all: Duration,
    /// One dump of every set's header (`ipset list -t`): what a settled
    /// full apply reads of every set.
    headers: Duration,
    /// The names dump alone (`ipset list -n`: no set's buckets walked).
    names: Duration,
    /// One header request by name per `IPW-` set: the per-request cost
    /// against the header dump's per-set cost sets `BY_NAME_RATIO`.
    headers_by_name: Duration,
    /// Every set of the bench's namespace, for the per-set costs.
    node_sets: usize,
    /// The no-op's set apply through a fresh store, whose first full
    /// apply reads deep (names, then every set with its members), as
    /// every full apply did before the header read.
    deep_noop: Duration,
    save_v4: Duration,
    save_v6: Duration,
}

/// The no-op apply of `state`'s sets through a fresh store (a deep read).
fn deep_noop(state: &PolicyState) -> Duration {
    let fresh = SetStore::new(IpsetClient::new().expect("socket"));
    fresh.register(policies_owner()).expect("register");
    let start = Instant::now();
    let r = fresh
        .apply_full(POLICIES_OWNER, &state.sets, &Default::default())
        .expect("deep no-op");
    let took = start.elapsed();
    assert!(!r.changed(), "the deep no-op wrote: {r:?}");
    took
}

fn floors() -> Floors {
    let mut client = IpsetClient::new().expect("socket");
    let start = Instant::now();
    let names: Vec<String> = client
        .list_names()
        .expect("names")
        .into_iter()
        .filter(|n| n.starts_with("IPW-"))
        .collect();
    let mut members = 0;
    for n in &names {
        members += client
            .list(&SetName::new(n).expect("name"))
            .expect("list")
            .members
            .len();
    }
    let store_read = start.elapsed();
    let start = Instant::now();
    let all = client.list_all().expect("list all");
    let list_all = start.elapsed();
    let start = Instant::now();
    let headers = client.list_headers().expect("list headers");
    let headers_took = start.elapsed();
    assert_eq!(headers.sets.len(), all.sets.len(), "the header dump");
    let start = Instant::now();
    let node_names = client.list_names().expect("names").len();
    let names_took = start.elapsed();
    assert_eq!(node_names, all.sets.len(), "the names dump");
    let start = Instant::now();
    for n in &names {
        let name = SetName::new(n).expect("name");
        client.list_header(&name).expect("header by name");
    }
    let headers_by_name = start.elapsed();
    let all_members: usize = all.sets.iter().map(|s| s.members.len()).sum();
    assert_eq!(
        all_members, members,
        "one dump and the per-set dumps differ"
    );
    let save = |f| {
        let start = Instant::now();
        iptables::read_table(f, Table::Filter).expect("save");
        start.elapsed()
    };
    Floors {
        store_read,
        list_all,
        headers: headers_took,
        names: names_took,
        headers_by_name,
        node_sets: node_names,
        deep_noop: Duration::ZERO,
        save_v4: save(Family::V4),
        save_v6: save(Family::V6),
    }
}

struct Scenario {
    base: Snapshot,
    changed: Snapshot,
    /// "namespace/name" of the pod `changed` relabels.
    changed_pod: String,
    added: Snapshot,
    /// "namespace/name" of the pod `added` adds.
    added_pod: String,
    opts: Options,
}

fn ours_round(sc: &Scenario, facts: Option<&mut Facts>) -> OursRound {
    let ns = NetNs::new("ipw-bench-pol").expect("netns");
    ns.run(|| {
        add_foreign_rules();
        let store = SetStore::new(IpsetClient::new().expect("socket"));
        store.register(policies_owner()).expect("register");
        // Sizes of what the full sync writes: computed here, untimed.
        let full_script_bytes = if facts.is_some() {
            let st = policies::desired(&sc.base, &sc.opts);
            st.iptables
                .iter()
                .map(|p| {
                    let saved = iptables::read_table(p.family, p.table).expect("save");
                    iptables::script(p, &saved).0.map_or(0, |s| s.len())
                })
                .sum()
        } else {
            0
        };

        let (full, state, r) = ours(&store, &sc.base, &sc.opts);
        assert!(
            state.problems.is_empty(),
            "generated objects with problems: {:?}",
            &state.problems[..state.problems.len().min(5)]
        );
        assert!(r.sets.as_ref().is_some_and(|s| s.verified));
        assert!(!r.chains_written.is_empty());

        let (noop, noop_state, r) = ours(&store, &sc.base, &sc.opts);
        assert_noop(&r);
        let deep_noop = deep_noop(&noop_state);

        // The daemon's partial syncs, from the index of what the last sync
        // applied (a full sync builds it after its apply).
        let start = Instant::now();
        let mut index = PolicyIndex::build(&sc.base, &sc.opts);
        let index_build = start.elapsed();
        let (c1, r1) = ours_partial(&store, &mut index, &sc.changed, &sc.changed_pod);
        assert_members_only(&r1);
        let (c2, r2) = ours_partial(&store, &mut index, &sc.base, &sc.changed_pod);
        assert_members_only(&r2);

        let (added, ra) = ours_partial(&store, &mut index, &sc.added, &sc.added_pod);
        assert!(
            !ra.chains_written.is_empty(),
            "a new local pod wrote no chain"
        );
        // The partial writes left the kernel exactly as a full sync wants it.
        let (_, _, r) = ours(&store, &sc.added, &sc.opts);
        assert_noop(&r);
        let (removed, rr) = ours_partial(&store, &mut index, &sc.base, &sc.added_pod);
        assert!(
            !rr.chains_deleted.is_empty(),
            "a removed local pod left its chain"
        );
        let (_, _, r) = ours(&store, &sc.base, &sc.opts);
        assert_noop(&r);
        let floors = Floors {
            deep_noop,
            ..floors()
        };

        if let Some(f) = facts {
            let (v4, v6) = filter_rules();
            f.rules_v4 = v4;
            f.rules_v6 = v6;
            f.save_bytes = (
                output("iptables-save", &["-t", "filter"]).len(),
                output("ip6tables-save", &["-t", "filter"]).len(),
            );
            f.chains = state.iptables.iter().map(|p| p.chains.len()).sum();
            f.sets = state.sets.len();
            f.members = state.sets.iter().map(|s| s.members.len()).sum();
            f.isolated = state
                .iptables
                .iter()
                .flat_map(|p| &p.chains)
                .filter(|c| c.name.starts_with("IPW-POD-FW-"))
                .count();
            f.full_script_bytes = full_script_bytes;
            f.change_members = member_changes(&r1);
            f.added_chains = ra.chains_written.clone();
            f.removed_chains = rr.chains_deleted.len();
        }
        OursRound {
            full,
            index_build,
            noop,
            change: [c1, c2],
            added,
            removed,
            floors,
        }
    })
    .expect("run in netns")
}

// ---------------------------------------------------------------------
// kube-router's way

#[derive(Default, Clone, Copy)]
struct KrSplit {
    compute: Duration,
    ipt_save: Duration,
    ipset_save: Duration,
    ipset_restore: Duration,
    ipt_restore: Duration,
}

impl KrSplit {
    fn kernel(&self) -> Duration {
        self.ipt_save + self.ipset_save + self.ipset_restore + self.ipt_restore
    }
    fn total(&self) -> Duration {
        self.compute + self.kernel()
    }
}

#[derive(Default, Clone, Copy)]
struct KrSizes {
    /// Bytes of the whole-table iptables-restore input, both families.
    table_bytes: usize,
    ipset_script_bytes: usize,
    ipset_script_lines: usize,
    ipset_save_bytes: usize,
}

/// The whole filter table as kube-router's buffer holds it before its
/// restore: every saved chain and rule that is not ours, in saved order,
/// with our chains and the jumps into them (first in their built-in
/// chains) written afresh.
fn kube_router_table(saved: &str, plan: &TablePlan) -> String {
    let mut out = String::with_capacity(saved.len() + 64 * 1024);
    out.push_str("*filter\n");
    let mut foreign_rules = Vec::new();
    for line in saved.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if !plan.owns(name) {
                out.push_str(line);
                out.push('\n');
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            if !plan.owns(chain) && !spec.contains(&plan.tag) {
                foreign_rules.push(line);
            }
        }
    }
    for c in &plan.chains {
        let _ = writeln!(out, ":{} - [0:0]", c.name);
    }
    for j in &plan.jumps {
        let _ = writeln!(out, "-A {} {}", j.from, j.rule);
    }
    for l in foreign_rules {
        out.push_str(l);
        out.push('\n');
    }
    for c in &plan.chains {
        for r in &c.rules {
            let _ = writeln!(out, "-A {} {}", c.name, r);
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// `ipset save`'s create options of each set, without `initval` (as
/// kube-router scrubs it, so sets of one shape share a TMP set).
fn saved_options(save: &str) -> BTreeMap<&str, String> {
    let mut out = BTreeMap::new();
    for line in save.lines() {
        let Some(rest) = line.strip_prefix("create ") else {
            continue;
        };
        let mut words = rest.split(' ');
        let Some(name) = words.next() else { continue };
        let mut opts = Vec::new();
        while let Some(w) = words.next() {
            if w == "initval" {
                words.next();
            } else {
                opts.push(w);
            }
        }
        out.insert(name, opts.join(" "));
    }
    out
}

/// kube-router's `buildIPSetRestore` for every policy set: a set it has
/// not seen gets `TYPE timeout 0` (plus `family inet6`), members
/// `timeout 0` (and `nomatch` last).
fn kube_router_ipset_script(sets: &[SetSpec], saved: &BTreeMap<&str, String>) -> String {
    let mut tmp: BTreeMap<String, String> = BTreeMap::new();
    let mut s = String::with_capacity(sets.iter().map(|x| x.members.len() * 40 + 200).sum());
    for set in sets {
        let opts = saved.get(set.name.as_str()).cloned().unwrap_or_else(|| {
            let family = match set.family {
                Family::V4 => "",
                Family::V6 => " family inet6",
            };
            format!("{}{family} timeout 0", set.set_type.name())
        });
        let next = tmp.len();
        let t = tmp.entry(opts.clone()).or_insert_with(|| {
            let t = format!("TMP-{next:016}");
            let _ = writeln!(s, "create {t} {opts}\nflush {t}");
            t
        });
        let t = t.clone();
        for m in &set.members {
            let m = m.to_string();
            let _ = match m.strip_suffix(" nomatch") {
                Some(base) => writeln!(s, "add {t} {base} timeout 0 nomatch"),
                None => writeln!(s, "add {t} {m} timeout 0"),
            };
        }
        let _ = writeln!(
            s,
            "create {} {opts}\nswap {t} {}\nflush {t}",
            set.name, set.name
        );
    }
    for t in tmp.values() {
        let _ = writeln!(s, "destroy {t}");
    }
    s
}

/// One sync kube-router's way; runs on a thread inside the namespace.
fn kube_router(snap: &Snapshot, opts: &Options) -> (KrSplit, KrSizes) {
    let mut t = KrSplit::default();
    let mut sizes = KrSizes::default();
    let start = Instant::now();
    let state = policies::desired(snap, opts);
    t.compute = start.elapsed();

    let start = Instant::now();
    let saved: Vec<String> = state
        .iptables
        .iter()
        .map(|p| output(save_cmd(p.family), &["-t", "filter"]))
        .collect();
    t.ipt_save = start.elapsed();

    let start = Instant::now();
    let save = output("ipset", &["save"]);
    t.ipset_save = start.elapsed();
    sizes.ipset_save_bytes = save.len();

    let start = Instant::now();
    let script = kube_router_ipset_script(&state.sets, &saved_options(&save));
    restore("ipset", &["restore", "-exist"], &script);
    t.ipset_restore = start.elapsed();
    sizes.ipset_script_bytes = script.len();
    sizes.ipset_script_lines = script.lines().count();

    let start = Instant::now();
    for (plan, saved) in state.iptables.iter().zip(&saved) {
        let table = kube_router_table(saved, plan);
        sizes.table_bytes += table.len();
        restore(restore_cmd(plan.family), &["-w"], &table);
    }
    t.ipt_restore = start.elapsed();
    (t, sizes)
}

#[derive(Default, Clone, Copy)]
struct KrRound {
    full: KrSplit,
    change: [KrSplit; 2],
}

fn kube_router_round(sc: &Scenario, facts: Option<&mut Facts>) -> KrRound {
    let ns = NetNs::new("ipw-bench-kr").expect("netns");
    ns.run(|| {
        add_foreign_rules();
        let (full, _) = kube_router(&sc.base, &sc.opts);
        let (c1, sizes) = kube_router(&sc.changed, &sc.opts);
        let (c2, _) = kube_router(&sc.base, &sc.opts);
        if let Some(f) = facts {
            // Same rules as ours: its restore wrote the same content.
            let (v4, v6) = filter_rules();
            assert_eq!(
                (v4, v6),
                (f.rules_v4, f.rules_v6),
                "kube-router's way wrote other rules"
            );
            f.kr = sizes;
        }
        KrRound {
            full,
            change: [c1, c2],
        }
    })
    .expect("run in netns")
}

// ---------------------------------------------------------------------
// Report

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.1}")
    }
}

/// Microseconds per one of `n`.
fn us_per(d: Duration, n: usize) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6 / n.max(1) as f64)
}

fn kib(bytes: usize) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

fn med<T>(v: &[T], f: impl Fn(&T) -> Duration) -> Duration {
    median(v.iter().map(f).collect())
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}

/// For profiling the controller without a kernel: N runs each of
/// `desired`, `PolicyIndex::build`, `PolicyIndex::state` and a no-op
/// catch-up (`IPWARDEN_BENCH_COMPUTE_ONLY_STEP` picks one of them alone).
fn compute_only_runs(base: &Snapshot, opts: &Options, n: usize) {
    let step = std::env::var("IPWARDEN_BENCH_COMPUTE_ONLY_STEP").ok();
    let wanted = |name: &str| step.as_deref().is_none_or(|s| s == name);
    let time = |name: &str, f: &dyn Fn()| {
        if !wanted(name) {
            return;
        }
        let times: Vec<Duration> = (0..n)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect();
        let min = *times.iter().min().expect("runs");
        println!("{name}: median {:?}, min {min:?} of {n}", median(times));
    };
    time("desired", &|| {
        std::hint::black_box(policies::desired(base, opts));
    });
    time("build", &|| {
        std::hint::black_box(PolicyIndex::build(base, opts));
    });
    let index = std::cell::RefCell::new(PolicyIndex::build(base, opts));
    time("state", &|| {
        std::hint::black_box(index.borrow().state());
    });
    // What a no-op full sync computes besides `state`.
    time("catch_up", &|| {
        let mut index = index.borrow_mut();
        let changes = index.changes_since(base);
        std::hint::black_box(index.update(base, &changes));
    });
    // A local pod added and removed: the two updates of a partial sync.
    let (added, added_pod) = local_pod_added(base);
    let (ns, name) = added_pod.split_once('/').expect("ns/name");
    let changes = PolicyChanges {
        pods: [(ns.to_string(), name.to_string())].into(),
        ..PolicyChanges::default()
    };
    time("local_pod", &|| {
        let mut index = index.borrow_mut();
        std::hint::black_box(index.update(&added, &changes));
        std::hint::black_box(index.update(base, &changes));
    });
}

fn main() {
    // `cargo test --benches` runs this binary too: only measure on request.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let compute_only = std::env::var("IPWARDEN_BENCH_COMPUTE_ONLY").ok();
    if compute_only.is_none() && !privileged("policies bench") {
        return;
    }
    let one = |key: &str, default: &str| {
        env_list(key, default)
            .first()
            .copied()
            .unwrap_or_else(|| default.parse().expect("default"))
    };
    let pods = one("IPWARDEN_BENCH_PODS", "5000").max(NODES);
    let policies_n = one("IPWARDEN_BENCH_POLICIES", "1000");
    let namespaces = one("IPWARDEN_BENCH_NAMESPACES", "50").clamp(3, 99);
    let runs = one("IPWARDEN_BENCH_RUNS", "7").max(1);
    let seed = one("IPWARDEN_BENCH_SEED", "1") as u64;

    let start = Instant::now();
    let base = generate(pods, policies_n, namespaces, seed);
    let opts = Options::default();
    let cluster_policies = one("IPWARDEN_BENCH_CLUSTER_POLICIES", "0");
    if let Some(n) = compute_only {
        let base = match cluster_policies {
            0 => base,
            c => base.with_cluster_network_policies(cluster_policy_objects(c)),
        };
        compute_only_runs(&base, &opts, n.parse().unwrap_or(10));
        return;
    }
    if cluster_policies > 0 {
        let base = base.with_cluster_network_policies(cluster_policy_objects(cluster_policies));
        let state = policies::desired(&base, &opts);
        let (changed, changed_pod) = pod_change(&base, &state, &opts);
        let (added, added_pod) = local_pod_added(&base);
        let sc = Scenario {
            base,
            changed,
            changed_pod,
            added,
            added_pod,
            opts,
        };
        cluster_policy_rounds(&sc, runs);
        return;
    }
    let base_state = policies::desired(&base, &opts);
    let (changed, changed_pod) = pod_change(&base, &base_state, &opts);
    let (added, added_pod) = local_pod_added(&base);
    let sc = Scenario {
        base,
        changed,
        changed_pod: changed_pod.clone(),
        added,
        added_pod: added_pod.clone(),
        opts,
    };
    eprintln!(
        "policies: generated {pods} pods, {policies_n} policies, {namespaces} namespaces in {:?}; \
         pod change: {changed_pod} role frontend -> backend; local pod added: {added_pod}",
        start.elapsed()
    );

    let mut facts = Facts::default();
    let mut ours_rounds = Vec::new();
    let mut kr_rounds = Vec::new();
    for round in 0..runs {
        let first = round == 0;
        // Ours first in even rounds; facts need ours before kube-router.
        let (o, k) = if round % 2 == 0 {
            let o = ours_round(&sc, first.then_some(&mut facts));
            let k = kube_router_round(&sc, first.then_some(&mut facts));
            (o, k)
        } else {
            let k = kube_router_round(&sc, None);
            (ours_round(&sc, None), k)
        };
        eprintln!(
            "policies round {round}: ours full {:?} (compute {:?}), no-op {:?}, change {:?} / {:?}, \
             local add {:?}, remove {:?}; kube-router full {:?}, change {:?} / {:?}",
            o.full.total(),
            o.full.compute,
            o.noop.total(),
            o.change[0].total(),
            o.change[1].total(),
            o.added.total(),
            o.removed.total(),
            k.full.total(),
            k.change[0].total(),
            k.change[1].total(),
        );
        ours_rounds.push(o);
        kr_rounds.push(k);
    }

    // Medians: the pod change has two samples per round.
    let changes: Vec<Split> = ours_rounds.iter().flat_map(|r| r.change).collect();
    let kr_changes: Vec<KrSplit> = kr_rounds.iter().flat_map(|r| r.change).collect();
    let row = |v: &[Split]| Medians {
        compute: med(v, |s| s.compute),
        sets: med(v, |s| s.sets),
        chains: med(v, |s| s.chains),
        total: med(v, |s| s.total()),
        kernel: med(v, |s| s.kernel()),
    };
    let fulls: Vec<Split> = ours_rounds.iter().map(|r| r.full).collect();
    let noops: Vec<Split> = ours_rounds.iter().map(|r| r.noop).collect();
    let addeds: Vec<Split> = ours_rounds.iter().map(|r| r.added).collect();
    let removeds: Vec<Split> = ours_rounds.iter().map(|r| r.removed).collect();
    let kr_fulls: Vec<KrSplit> = kr_rounds.iter().map(|r| r.full).collect();
    let kr_row = |v: &[KrSplit]| (med(v, |s| s.total()), med(v, |s| s.kernel()));
    let (kr_full_total, kr_full_kernel) = kr_row(&kr_fulls);
    let (kr_change_total, kr_change_kernel) = kr_row(&kr_changes);

    let f = &facts;
    let local = pods / NODES;
    println!(
        "Generated cluster (seed {seed}): {pods} pods ({local} on this node) in {namespaces} namespaces, \
         {policies_n} NetworkPolicies; IPv4 pods, so the IPv6 table holds only the top chains. \
         Both filter tables also hold {} foreign rules (kube-proxy, CNI) per family.\n",
        foreign_count()
    );
    println!(
        "| isolated local pods | our chains (v4 + v6) | our filter rules (v4 + v6) | foreign filter rules (v4 + v6) | sets | set members | runs |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} + {} | {} + {} | {} | {} | {runs} |\n",
        f.isolated,
        f.chains,
        f.rules_v4 - foreign_count(),
        f.rules_v6 - foreign_count(),
        foreign_count(),
        foreign_count(),
        f.sets,
        f.members
    );

    println!(
        "medians in ms; ours, full and no-op = compute (`desired`) + sets (`apply_sets`: the set store) + iptables (`apply_chains`); \
         ours, a pod change = compute (`PolicyIndex::update` with that pod) + sets (`apply_delta_sets`) + iptables (`apply_delta_chains`, \
         `destroy_unused_sets`); kube-router's way = the same compute as our full sync + its save and full restores; \
         ratio = kube-router / ours (above 1: ours is faster)\n"
    );
    println!(
        "| sync | ours: compute | ours: sets | ours: iptables | ours: total | kube-router's way: total | ratio | ours: kernel only | kube-router's way: kernel only | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let print = |name: &str, r: &Medians, kr: Option<(Duration, Duration)>| {
        let (krt, krr, krk, krkr) = match kr {
            Some((kt, kk)) => (ms(kt), ratio(kt, r.total), ms(kk), ratio(kk, r.kernel)),
            None => Default::default(),
        };
        println!(
            "| {name} | {} | {} | {} | {} | {krt} | {krr} | {} | {krk} | {krkr} |",
            ms(r.compute),
            ms(r.sets),
            ms(r.chains),
            ms(r.total),
            ms(r.kernel)
        );
    };
    let full = row(&fulls);
    let change = row(&changes);
    print(
        "full sync (empty netns)",
        &full,
        Some((kr_full_total, kr_full_kernel)),
    );
    print("no-op (same state again)", &row(&noops), None);
    print(
        &format!(
            "one remote pod's label ({} members changed, 0 chains)",
            f.change_members
        ),
        &change,
        Some((kr_change_total, kr_change_kernel)),
    );
    print(
        &format!("local pod added ({} chains written)", f.added_chains.len()),
        &row(&addeds),
        None,
    );
    print(
        &format!("local pod removed ({} chains deleted)", f.removed_chains),
        &row(&removeds),
        None,
    );

    println!("\nkube-router's way, step by step (medians in ms):\n");
    println!(
        "| sync | compute | iptables-save x2 | ipset save | ipset restore | iptables-restore x2 (whole table) | total |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, v) in [
        ("full sync", &kr_fulls),
        ("one remote pod's label", &kr_changes),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            ms(med(v, |s| s.compute)),
            ms(med(v, |s| s.ipt_save)),
            ms(med(v, |s| s.ipset_save)),
            ms(med(v, |s| s.ipset_restore)),
            ms(med(v, |s| s.ipt_restore)),
            ms(med(v, |s| s.total())),
        );
    }
    println!();
    println!(
        "- sizes: `iptables-save -t filter` after the full sync {} (v4) and {} (v6); our full-sync \
         `--noflush` script {}, a pod change writes no iptables text; kube-router's whole-table \
         restore input {} per sync, its `ipset restore` script {} ({} lines) after an `ipset save` of {}",
        kib(f.save_bytes.0),
        kib(f.save_bytes.1),
        kib(f.full_script_bytes),
        kib(f.kr.table_bytes),
        kib(f.kr.ipset_script_bytes),
        f.kr.ipset_script_lines,
        kib(f.kr.ipset_save_bytes),
    );
    println!(
        "- what our apply reads: the set store's first full apply lists the names of the sets, \
         then dumps each of the {} policy sets ({} netlink dumps; a changing apply reads twice, \
         before its diff and to verify); a settled one (the no-op) dumps every set's header once \
         and the members of a rotating 1/{} of the sets (by members) and of those whose header \
         differs; iptables::apply runs `iptables-save -t filter` once per family (again after a \
         restore) unless the ruleset generation says nothing moved",
        f.sets,
        f.sets + 1,
        ipwarden::store::SCRUB_PERIODS,
    );
    let fl: Vec<Floors> = ours_rounds.iter().map(|r| r.floors).collect();
    let noop_sets_median = med(&ours_rounds, |r| r.noop.sets);
    let node_sets = fl[0].node_sets;
    println!(
        "- the reads alone, in the synced state (medians): the store's read of the policy sets \
         (names, then one dump per set) {} ms, against {} ms for one dump of every set with its \
         members and {} ms for one dump of every set's header ({} sets on the node: {} us a \
         set), {} ms for the names dump, {} ms for one header request per policy set ({} us a \
         request, {:.1} sets of the dump); `iptables-save -t filter` {} ms \
         (v4) and {} ms (v6); the no-op's set apply through a fresh store (a deep read, as \
         before the header read) {} ms against the settled store's {} ms",
        ms(med(&fl, |f| f.store_read)),
        ms(med(&fl, |f| f.list_all)),
        ms(med(&fl, |f| f.headers)),
        node_sets,
        us_per(med(&fl, |f| f.headers), node_sets),
        ms(med(&fl, |f| f.names)),
        ms(med(&fl, |f| f.headers_by_name)),
        us_per(med(&fl, |f| f.headers_by_name), f.sets),
        (med(&fl, |f| f.headers_by_name).as_secs_f64() / f.sets as f64)
            / (med(&fl, |f| f.headers).as_secs_f64() / node_sets as f64),
        ms(med(&fl, |f| f.save_v4)),
        ms(med(&fl, |f| f.save_v6)),
        ms(med(&fl, |f| f.deep_noop)),
        ms(noop_sets_median),
    );
    println!(
        "- where the one pod change's {} ms go (a partial sync, as the daemon runs it): the index \
         update {} ms; the member path {} ms ({} member writes; a full read of every policy set \
         would take about {} ms); iptables {} ms (no chain changed, so no restore)",
        ms(change.total),
        ms(change.compute),
        ms(change.sets),
        f.change_members,
        ms(med(&fl, |f| f.store_read)),
        ms(change.chains),
    );
    let added = row(&addeds);
    let removed = row(&removeds);
    println!(
        "- a local pod added: the index update {} ms, new sets and members {} ms, the partial \
         restore {} ms; removed: {} ms, {} ms, {} ms (against `iptables-save -t filter` alone at \
         {} ms, which the partial write does not run)",
        ms(added.compute),
        ms(added.sets),
        ms(added.chains),
        ms(removed.compute),
        ms(removed.sets),
        ms(removed.chains),
        ms(med(&fl, |f| f.save_v4)),
    );
    println!("- the local pod added wrote {}", f.added_chains.join(", "));
    println!(
        "- a full sync also builds the index the partial syncs start from: {} ms (median), \
         beside the full sync's compute",
        ms(med(&ours_rounds, |r| r.index_build)),
    );
    println!();
    let full_total = full.total;
    let change_total = change.total;
    let full_ratio = kr_full_total.as_secs_f64() / full_total.as_secs_f64();
    let change_ratio = kr_change_total.as_secs_f64() / change_total.as_secs_f64();
    println!(
        "- target full sync <= 1 s: {:.2} s ({})",
        full_total.as_secs_f64(),
        met(full_total <= Duration::from_secs(1))
    );
    println!(
        "- target one pod label change <= 15 ms: {} ms ({})",
        ms(change_total),
        met(change_total <= Duration::from_millis(15))
    );
    for (what, r) in [("added", &added), ("removed", &removed)] {
        println!(
            "- target a local pod {what} <= 50 ms: {} ms ({})",
            ms(r.total),
            met(r.total <= Duration::from_millis(50))
        );
    }
    println!(
        "- target >= 5x faster than kube-router's way on the one pod change: {change_ratio:.1}x ({}); full sync {full_ratio:.1}x",
        met(change_ratio >= 5.0)
    );
}

// ---------------------------------------------------------------------
// ClusterNetworkPolicies beside the NetworkPolicies

/// `n` ClusterNetworkPolicies of the shapes the API overview's stories
/// have, over the generated namespaces' `team`/`env` labels.
fn cluster_policy_objects(
    n: usize,
) -> Vec<std::sync::Arc<ipwarden::cluster::cnp::ClusterNetworkPolicy>> {
    use common::cluster::{team, ENVS, TEAMS};
    use serde_json::json;
    (0..n)
        .map(|i| {
            let env = ENVS[i % ENVS.len()];
            let team = team(i % TEAMS);
            let tier = if i % 3 == 2 { "Baseline" } else { "Admin" };
            let subject = if i % 2 == 0 {
                json!({"namespaces": {"matchLabels": {"env": env}}})
            } else {
                json!({"pods": {"namespaceSelector": {"matchLabels": {"team": team}},
                    "podSelector": {"matchLabels": {"tier": "web"}}}})
            };
            let spec = json!({
                "tier": tier, "priority": i % 1000, "subject": subject,
                "ingress": [
                    {"name": "monitoring", "action": "Accept",
                     "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                     "protocols": [{"destinationNamedPort": "metrics"}]},
                    {"name": "same-env", "action": "Pass",
                     "from": [{"namespaces": {"matchLabels": {"env": env}}}]},
                    {"name": "other-teams", "action": "Deny",
                     "from": [{"pods": {"namespaceSelector": {"matchExpressions": [
                        {"key": "team", "operator": "NotIn", "values": [team]}]},
                        "podSelector": {}}}],
                     "protocols": [{"tcp": {"destinationPort": {"range": {"start": 1, "end": 1023}}}}]}
                ],
                "egress": [
                    {"name": "imds", "action": "Deny", "to": [{"networks": ["169.254.169.254/32"]}]},
                    {"name": "dns", "action": "Accept",
                     "to": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                     "protocols": [{"udp": {"destinationPort": {"number": 53}}}]}
                ]
            });
            let p = json!({"metadata": {"name": format!("cnp-{i}")}, "spec": spec});
            std::sync::Arc::new(serde_json::from_value(p).expect("a ClusterNetworkPolicy"))
        })
        .collect()
}

/// Ours on the cluster with ClusterNetworkPolicies, `runs` rounds in fresh
/// namespaces: full sync, no-op, then the pod change and the local pod
/// added and removed, whole and partial.
fn cluster_policy_rounds(sc: &Scenario, runs: usize) {
    let opts = &sc.opts;
    let (mut full, mut noop) = (Vec::new(), Vec::new());
    let (mut whole_change, mut whole_added, mut whole_removed) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut change, mut added, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let ns = NetNs::new("ipw-bench-cnp").expect("netns");
        ns.run(|| {
            add_foreign_rules();
            let store = SetStore::new(IpsetClient::new().expect("socket"));
            store.register(policies_owner()).expect("register");
            let (f, state, r) = ours(&store, &sc.base, opts);
            assert!(
                state.problems.is_empty(),
                "{:?}",
                &state.problems[..state.problems.len().min(5)]
            );
            assert!(!r.chains_written.is_empty());
            full.push(f);
            let (n, _, r) = ours(&store, &sc.base, opts);
            assert_noop(&r);
            noop.push(n);
            // Whole: the daemon's syncs while the index left the tiers out.
            whole_change.push(ours(&store, &sc.changed, opts).0);
            whole_change.push(ours(&store, &sc.base, opts).0);
            whole_added.push(ours(&store, &sc.added, opts).0);
            whole_removed.push(ours(&store, &sc.base, opts).0);
            // Partial, from the index of what the last sync applied; a
            // full sync after each finds the kernel as it wants it.
            let mut index = PolicyIndex::build(&sc.base, opts);
            let mut partial = |snap: &Snapshot, pod: &str| {
                let (split, report) = ours_partial(&store, &mut index, snap, pod);
                assert_noop(&ours(&store, snap, opts).2);
                (split, report)
            };
            change.push(partial(&sc.changed, &sc.changed_pod).0);
            change.push(partial(&sc.base, &sc.changed_pod).0);
            let (a, ra) = partial(&sc.added, &sc.added_pod);
            assert!(
                !ra.chains_written.is_empty(),
                "a new local pod wrote no chain"
            );
            added.push(a);
            let (d, rd) = partial(&sc.base, &sc.added_pod);
            assert!(
                !rd.chains_deleted.is_empty(),
                "a removed local pod left its chain"
            );
            removed.push(d);
        })
        .expect("netns");
    }
    let row = |what: &str, v: &[Split]| {
        println!(
            "| {what} | {} | {} | {} | {} |",
            ms(med(v, |s| s.compute)),
            ms(med(v, |s| s.sets)),
            ms(med(v, |s| s.chains)),
            ms(med(v, Split::total))
        );
    };
    let cnps = sc.base.cluster_network_policies.len();
    println!(
        "{} pods, {} NetworkPolicies, {cnps} ClusterNetworkPolicies; pod change: {}; local pod added: {}; medians of {runs} rounds, ms\n",
        sc.base.pods.len(),
        sc.base.network_policies.len(),
        sc.changed_pod,
        sc.added_pod,
    );
    println!("| sync | compute | sets | iptables | total |\n|---|---|---|---|---|");
    row("full, from empty", &full);
    row("no-op", &noop);
    row("one pod label change, whole (before)", &whole_change);
    row("one pod label change, partial", &change);
    row("local pod added, whole (before)", &whole_added);
    row("local pod added, partial", &added);
    row("local pod removed, whole (before)", &whole_removed);
    row("local pod removed, partial", &removed);
}
