//! `ipwarden kernel ipset [NAME] [--json|--save]`: what the kernel's ipsets
//! hold, read over netlink (no `ipset` process). The default layout is
//! `ipset list`'s; `--save` prints `ipset save` lines; `--json` prints
//! `[{"name", "type", "family", ..., "members": ["10.0.0.1,tcp:80", ...]}]`
//! with each member written exactly as `ipset save` writes it.

use std::io::Write;

use anyhow::Context;
use serde_json::json;

use crate::kernel::ipset::{family_name, IpSet, IpsetClient, SetName};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this set (all sets when omitted).
    pub name: Option<String>,
    /// Print JSON for scripts instead of the human table.
    #[arg(long, conflicts_with = "save")]
    pub json: bool,
    /// Print `ipset save` lines.
    #[arg(long)]
    pub save: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut client = IpsetClient::new()?;
    let sets = match &args.name {
        Some(n) => {
            let name = SetName::new(n.as_str())?;
            vec![client.list(&name)?]
        }
        None => {
            let listing = client.list_all()?;
            for u in &listing.unsupported {
                eprintln!(
                    "ipwarden: set {} ({}) not shown: {}",
                    u.name, u.type_name, u.reason
                );
            }
            listing.sets
        }
    };
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&to_json(&sets))?;
        s.push('\n');
        s
    } else if args.save {
        sets.iter().map(IpSet::to_string).collect()
    } else {
        list_text(&sets)
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("writing to stdout")
}

/// The JSON array: one object per set, members as `ipset save` text.
pub fn to_json(sets: &[IpSet]) -> serde_json::Value {
    sets.iter()
        .map(|s| {
            let h = &s.header;
            json!({
                "name": s.name.as_str(),
                "type": h.set_type.name(),
                "family": family_name(h.family),
                "header": h.to_string(),
                "hashsize": h.hashsize,
                "maxelem": h.maxelem,
                "timeout": h.timeout,
                "comment": h.comment,
                "counters": h.counters,
                "revision": s.stats.map(|st| st.revision),
                "references": s.stats.map(|st| st.references),
                "entries": s.stats.map(|st| st.entries),
                "members": s.members.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// The layout of `ipset list`: one block per set, a blank line between.
pub fn list_text(sets: &[IpSet]) -> String {
    let mut out = String::new();
    for (i, s) in sets.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("Name: {}\n", s.name));
        out.push_str(&format!("Type: {}\n", s.header.set_type));
        if let Some(st) = s.stats {
            out.push_str(&format!("Revision: {}\n", st.revision));
        }
        // `ipset list` prints the header without the type name.
        let header = s.header.to_string();
        let rest = header
            .strip_prefix(s.header.set_type.name())
            .unwrap_or(&header)
            .trim_start();
        out.push_str(&format!("Header: {rest}\n"));
        if let Some(st) = s.stats {
            out.push_str(&format!("Size in memory: {}\n", st.memsize));
            out.push_str(&format!("References: {}\n", st.references));
            out.push_str(&format!("Number of entries: {}\n", st.entries));
        }
        out.push_str("Members:\n");
        for m in &s.members {
            out.push_str(&format!("{m}\n"));
        }
    }
    out
}
