//! Which iptables backend the node uses: nf_tables (`iptables-nft-*`) or
//! the legacy x_tables (`iptables-legacy-*`). Our chains must sit beside
//! kube-proxy's and the CNI's, in the backend they use, or the kernel runs
//! both rule sets and neither sees the other's. Detected as Kubernetes'
//! iptables-wrapper does: the kubelet's hint chains first, else the backend
//! holding more rules. Chosen once per process ([`select`]); every save,
//! restore and counter read uses it.

use std::{fmt, process::Command, sync::OnceLock};

use crate::desired::Family;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Backend {
    Nft,
    Legacy,
}

/// `--iptables-backend`: detect, or force one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    Auto,
    Nft,
    Legacy,
}

/// The backend in force and why it was chosen (for the log and `status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Selected {
    pub backend: Backend,
    pub why: String,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        })
    }
}

impl Backend {
    /// `iptables-nft-save`, `ip6tables-legacy-save`, ...
    pub(crate) fn save_cmd(self, family: Family) -> &'static str {
        self.commands(family)[0]
    }

    pub(crate) fn restore_cmd(self, family: Family) -> &'static str {
        self.commands(family)[1]
    }

    /// The save and the restore command.
    fn commands(self, family: Family) -> [&'static str; 2] {
        match (self, family) {
            (Backend::Nft, Family::V4) => ["iptables-nft-save", "iptables-nft-restore"],
            (Backend::Nft, Family::V6) => ["ip6tables-nft-save", "ip6tables-nft-restore"],
            (Backend::Legacy, Family::V4) => ["iptables-legacy-save", "iptables-legacy-restore"],
            (Backend::Legacy, Family::V6) => ["ip6tables-legacy-save", "ip6tables-legacy-restore"],
        }
    }
}

static SELECTED: OnceLock<Selected> = OnceLock::new();

/// Fixes the backend for this process (detected for `Choice::Auto`) and
/// returns it. A second call returns the first choice.
pub(crate) fn select(choice: Choice) -> &'static Selected {
    SELECTED.get_or_init(|| match choice {
        Choice::Auto => detect(),
        Choice::Nft => forced(Backend::Nft),
        Choice::Legacy => forced(Backend::Legacy),
    })
}

/// The backend in force: the selected one, else detected now (the
/// commands that never call [`select`], such as `cleanup`).
pub(crate) fn current() -> &'static Selected {
    select(Choice::Auto)
}

fn forced(backend: Backend) -> Selected {
    Selected {
        backend,
        why: "forced by --iptables-backend".into(),
    }
}

/// The kubelet (1.24+) creates these in the mangle table of the backend it
/// uses, so that other components can follow it.
const HINT_CHAINS: [&str; 2] = ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"];

/// iptables-wrapper's rule: a hint chain decides; else the backend with
/// more rules (both families counted). Unlike the wrapper, a tie (a node
/// with no rules at all) picks nft, the default of Debian and of our image.
pub(crate) fn detect() -> Selected {
    for backend in [Backend::Nft, Backend::Legacy] {
        for family in [Family::V4, Family::V6] {
            if !table_exists(backend, family, "mangle") {
                continue;
            }
            if let Some(chain) = hint_chain(&save(backend, family, Some("mangle"))) {
                return Selected {
                    backend,
                    why: format!("detected: the kubelet's {chain} chain is in {backend}"),
                };
            }
        }
    }
    let rules = |backend| {
        [Family::V4, Family::V6]
            .into_iter()
            .map(|f| count_rules(&save(backend, f, None)))
            .sum::<usize>()
    };
    let (legacy, nft) = (rules(Backend::Legacy), rules(Backend::Nft));
    let backend = if legacy > nft {
        Backend::Legacy
    } else {
        Backend::Nft
    };
    Selected {
        backend,
        why: format!("detected: {legacy} legacy rules, {nft} nft rules"),
    }
}

/// Whether `table` exists, so that reading it creates nothing: asking
/// x_tables (legacy) for a table by name instantiates it in the network
/// namespace, whose hooks then cost every packet of the node (an empty
/// legacy mangle table, met in PREROUTING and INPUT: 6-7% of a UDP
/// packet's CPU in the tc bench, about 80 ns). nft tables are never
/// created by a read.
pub(crate) fn table_exists(backend: Backend, family: Family, table: &str) -> bool {
    let names = match (backend, family) {
        (Backend::Nft, _) => return true,
        (Backend::Legacy, Family::V4) => "/proc/net/ip_tables_names",
        (Backend::Legacy, Family::V6) => "/proc/net/ip6_tables_names",
    };
    // Unreadable: x_tables is not loaded, so no legacy table exists.
    std::fs::read_to_string(names).is_ok_and(|n| n.lines().any(|l| l == table))
}

/// The save output of one backend, empty when it cannot be read (a
/// kernel without x_tables, a missing binary): such a backend holds none.
fn save(backend: Backend, family: Family, table: Option<&str>) -> String {
    let mut cmd = Command::new(backend.save_cmd(family));
    if let Some(t) = table {
        cmd.args(["-t", t]);
    }
    match cmd.output() {
        Ok(out) if out.status.success() => super::apply::text(out.stdout),
        Ok(_) | Err(_) => String::new(),
    }
}

/// A hint chain declared in a save output (`:KUBE-IPTABLES-HINT - [0:0]`).
fn hint_chain(save: &str) -> Option<&'static str> {
    HINT_CHAINS.into_iter().find(|chain| {
        save.lines()
            .any(|l| l.strip_prefix(':').and_then(|l| l.split(' ').next()) == Some(*chain))
    })
}

/// Rule lines (`-A ...`) of a save output.
fn count_rules(save: &str) -> usize {
    save.lines().filter(|l| l.starts_with('-')).count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_rule_lines_are_counted() {
        let save = "# Generated\n*filter\n:INPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n\
            -A INPUT -j KUBE-SERVICES\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n";
        assert_eq!(super::count_rules(save), 2);
        assert_eq!(super::hint_chain(save), None);
        let mangle = "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";
        assert_eq!(super::hint_chain(mangle), Some("KUBE-IPTABLES-HINT"));
    }
}
