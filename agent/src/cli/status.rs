//! `ipwarden status`: per controller the last full and partial sync and
//! their durations, the objects watched, set drift found and healed, and
//! the eBPF mode and attached interfaces, and every resource or object of
//! the source that fails (and why), from the running agent's /state.

use anyhow::Result;
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The running agent's API (`--api-addr` of `ipwarden run`).
    #[arg(long, default_value = "127.0.0.1:20244")]
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
    let mut out = Vec::new();
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
    out.push(format!("watching: {}", objects.join(", ")));
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
    let problems = state["source_problems"].as_object();
    if problems.is_none_or(serde_json::Map::is_empty) {
        out.push("source: every resource reads".into());
    }
    for (resource, why) in problems.into_iter().flatten() {
        out.push(format!(
            "source problem: {resource}: {}",
            why.as_str().unwrap_or_default()
        ));
    }
    out.push(format!(
        "set drift: {} found, {} healed",
        state["drift"]["found"], state["drift"]["healed"]
    ));
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
