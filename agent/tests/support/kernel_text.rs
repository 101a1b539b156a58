//! Reading a namespace's rules and sets back with the tools nobody here
//! wrote, for the policy tests that compare two namespaces.

use ipwarden::{netns::NetNs, reconcile::policies::PolicyReport};

/// `cmd args` in `ns`; its stdout. Panics with stderr when it fails.
pub fn output(ns: &NetNs, cmd: &str, args: &[&str]) -> String {
    let out = ns.command(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Our filter rules of both families and our policy sets' members (hash
/// seeds cut: they differ from set to set), as text to compare.
pub fn kernel_text(ns: &NetNs) -> String {
    let mut text = String::new();
    for cmd in ["iptables-save", "ip6tables-save"] {
        let save = output(ns, cmd, &["-t", "filter"]);
        text.extend(
            save.lines()
                .filter(|l| l.contains("IPW") && !l.starts_with('#'))
                .map(|l| format!("{l}\n")),
        );
    }
    let mut sets: Vec<String> = output(ns, "ipset", &["save"])
        .lines()
        .filter(|l| l.contains("IPW-"))
        .map(|l| l.split(" initval ").next().unwrap_or(l).to_string())
        .collect();
    sets.sort();
    text + &sets.join("\n")
}

/// A full apply that found nothing to do: no chain, jump or set member
/// written.
pub fn assert_wrote_nothing(report: &PolicyReport, step: usize) {
    assert!(
        report.chains_written.is_empty()
            && report.chains_deleted.is_empty()
            && report.jumps_rewritten.is_empty()
            && !report.sets.as_ref().unwrap().changed(),
        "step {step}: {report:?}"
    );
}
