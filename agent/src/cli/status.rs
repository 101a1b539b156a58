//! `ipwarden status`: readiness, each resource of the source (listed,
//! failing with its last error, waiting for its first list), per
//! controller the last full and partial sync and their durations, the
//! objects watched, set drift found and healed, the iptables backend, the
//! eBPF mode and attached interfaces, and every object of the source that
//! cannot be read, from the running agent's /state. Exits non-zero when no agent answers.

use anyhow::Result;
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The running agent's status address (`--status-bind-address` of
    /// `ipwarden run`); `:PORT` and `localhost:PORT` are this host.
    #[arg(long, default_value = super::run::STATUS_ADDR)]
    pub agent: String,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let state = super::explain::agent_state(&args.agent)?;
    if args.json {
        println!("{state}");
    } else {
        for line in lines(&state) {
            println!("{line}");
        }
    }
    Ok(())
}

fn sync(v: &Value) -> String {
    if v.is_null() {
        return "never".into();
    }
    format!(
        "{:.0}s ago, took {:.1} ms: {}",
        v["age_seconds"].as_f64().unwrap_or(0.0),
        v["duration_ms"].as_f64().unwrap_or(0.0),
        v["summary"].as_str().unwrap_or_default()
    )
}

/// The report, one line each.
pub fn lines(state: &Value) -> Vec<String> {
    let mut out = vec![ready(state)];
    out.push("source:".into());
    for r in state["sources"].as_array().into_iter().flatten() {
        let name = r["resource"].as_str().unwrap_or_default();
        out.push(match r["error"].as_str() {
            Some(e) => format!(
                "  {name}: failing ({} failures), last error: {e}",
                r["failures"]
            ),
            None => format!("  {name}: {}", r["state"].as_str().unwrap_or_default()),
        });
        out.extend(match r["held_shrinks"].as_u64() {
            Some(n) if n > 0 => Some(format!(
                "    {n} read(s) that shrank it held at its last good content"
            )),
            _ => None,
        });
    }
    for (name, c) in state["controllers"].as_object().into_iter().flatten() {
        out.push(format!(
            "{name}: {} syncs, {} failed{}",
            c["syncs"],
            c["failures"],
            c["last_error"]
                .as_str()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default()
        ));
        out.push(format!("  last full sync:    {}", sync(&c["last_full"])));
        out.push(format!("  last partial sync: {}", sync(&c["last_partial"])));
    }
    let objects: Vec<String> = state["objects"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    if !objects.is_empty() {
        out.push(format!("watching: {}", objects.join(", ")));
    }
    let tiers: Vec<&str> = state["cluster_policies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["tier"].as_str())
        .collect();
    let count = |tier: &str| tiers.iter().filter(|t| **t == tier).count();
    out.push(format!(
        "ClusterNetworkPolicies in force: {} (Admin {}, Baseline {})",
        tiers.len(),
        count("Admin"),
        count("Baseline")
    ));
    for (resource, why) in state["source_problems"].as_object().into_iter().flatten() {
        out.push(format!(
            "source problem: {resource}: {}",
            why.as_str().unwrap_or_default()
        ));
    }
    out.push(format!(
        "set drift: {} found, {} healed",
        state["drift"]["found"], state["drift"]["healed"]
    ));
    if let Some(b) = state["iptables"]["backend"].as_str() {
        out.push(format!(
            "iptables: {b} backend ({})",
            state["iptables"]["why"].as_str().unwrap_or_default()
        ));
    }
    out.push(match state["bpf"].as_object() {
        None => "eBPF: off".into(),
        Some(b) => format!(
            "eBPF: mode {}, attached to {}",
            b["mode"].as_str().unwrap_or_default(),
            b["interfaces"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    });
    out
}

/// Ready, or what it waits for: the source's first list, or a controller's
/// first full sync.
fn ready(state: &Value) -> String {
    if state["ready"] == true {
        return "ready: yes, every controller has programmed the kernel".into();
    }
    let waiting: Vec<&str> = state["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] != "listed")
        .filter_map(|r| r["resource"].as_str())
        .collect();
    if !waiting.is_empty() {
        return format!(
            "ready: no, the source has not listed {} (no sync runs on a partial view)",
            waiting.join(", ")
        );
    }
    let unsynced: Vec<&str> = state["controllers"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, c)| c["last_full"].is_null())
        .map(|(name, _)| name.as_str())
        .collect();
    format!(
        "ready: no, waiting for the first full sync of {}",
        unsynced.join(", ")
    )
}
