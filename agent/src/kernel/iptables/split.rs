//! A large restore run as two `iptables-restore` processes at once.
//!
//! Under the VM's qemu TCG, `iptables-nft-restore` of the policies' first
//! write (10k rules) spends most of its 5 s parsing, on one CPU
//! (BENCHMARKS.md, "Two restores at once"). iptables-nft checks a jump's
//! target chain at COMMIT, not while parsing, so a script can be cut in
//! two that parse side by side: the first holds only chains the table
//! does not have yet (so nothing reaches them until the second commits)
//! whose jumps stay among themselves or go to chains the script does not
//! declare; the second holds everything else, and its COMMIT is sent only
//! once the first has committed. The table ends as the one script would
//! have left it, and no packet sees a state in between: the first commit
//! adds chains nothing jumps to.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    process::{Command, Stdio},
};

use super::{apply::restore, backend, saved::SavedTable, IptablesError};
use crate::desired::{Family, Table};

/// Scripts with fewer `-A` lines than this are restored in one go: two
/// processes cost more than they save on a small parse.
pub(super) const MIN_RULES: usize = 2000;

/// A script cut in two; applying `first`, then `second`, equals the script.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Halves {
    pub first: String,
    /// Without its COMMIT line: sent once `first` has committed.
    pub second: String,
}

/// The two halves of `script` (as `render::script` writes it) against the
/// table it was rendered from; `None` when it has fewer than `min_rules`
/// appended rules or no new chain can go first.
pub(super) fn halves(script: &str, saved: &SavedTable, min_rules: usize) -> Option<Halves> {
    let parsed = Parsed::of(script)?;
    let total: usize = parsed.rules.values().map(Vec::len).sum();
    if total < min_rules {
        return None;
    }
    let first = parsed.first_chains(saved, total / 2);
    if first.is_empty() || first.len() == parsed.declared.len() {
        return None;
    }
    Some(parsed.cut(&first))
}

/// A restore script's parts, by chain.
struct Parsed<'s> {
    header: &'s str,
    /// Declared chains, in script order.
    declared: Vec<&'s str>,
    /// Each declared chain's `-A` lines.
    rules: BTreeMap<&'s str, Vec<&'s str>>,
    /// Every line after the declarations, in order (`-A` lines included).
    body: Vec<&'s str>,
}

impl<'s> Parsed<'s> {
    fn of(script: &'s str) -> Option<Self> {
        let mut lines = script.lines();
        let header = lines.next().filter(|h| h.starts_with('*'))?;
        let mut parsed = Parsed {
            header,
            declared: Vec::new(),
            rules: BTreeMap::new(),
            body: Vec::new(),
        };
        for line in lines {
            if line == "COMMIT" {
                return Some(parsed);
            }
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next()?;
                parsed.declared.push(name);
                parsed.rules.entry(name).or_default();
                continue;
            }
            if let Some(chain) = appended_to(line) {
                if let Some(rules) = parsed.rules.get_mut(chain) {
                    rules.push(line);
                }
            }
            parsed.body.push(line);
        }
        None
    }

    /// New chains, in declaration order, each of whose jumps leads to a
    /// chain taken before it or one the script does not declare, until
    /// they hold `enough` rules. Passes repeat while one takes a chain:
    /// a chain may be declared before the chains it jumps to.
    fn first_chains(&self, saved: &SavedTable, enough: usize) -> BTreeSet<&'s str> {
        let touched = self.touched_otherwise();
        let mut first = BTreeSet::new();
        let mut held = 0;
        let mut took = true;
        while took && held < enough {
            took = false;
            for &chain in &self.declared {
                if held >= enough {
                    break;
                }
                let eligible = !first.contains(chain)
                    && saved.rules(chain).is_none()
                    && !touched.contains(chain)
                    && self.rules[chain].iter().all(|rule| {
                        jump_targets(rule).all(|t| first.contains(t) || !self.rules.contains_key(t))
                    });
                if eligible {
                    first.insert(chain);
                    held += self.rules[chain].len();
                    took = true;
                }
            }
        }
        first
    }

    /// Chains named by a body line other than an `-A` (deleted, inserted
    /// into): those stay in the second half.
    fn touched_otherwise(&self) -> BTreeSet<&'s str> {
        self.body
            .iter()
            .filter(|l| appended_to(l).is_none())
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect()
    }

    fn cut(&self, first: &BTreeSet<&str>) -> Halves {
        let declare = |take: bool| -> String {
            self.declared
                .iter()
                .filter(|c| first.contains(*c) == take)
                .map(|c| format!(":{c} - [0:0]\n"))
                .collect()
        };
        let mut one = format!("{}\n{}", self.header, declare(true));
        let mut two = format!("{}\n{}", self.header, declare(false));
        for line in &self.body {
            let to = match appended_to(line) {
                Some(chain) if first.contains(chain) => &mut one,
                _ => &mut two,
            };
            to.push_str(line);
            to.push('\n');
        }
        one.push_str("COMMIT\n");
        Halves {
            first: one,
            second: two,
        }
    }
}

/// The chain of an `-A CHAIN ...` line.
fn appended_to(line: &str) -> Option<&str> {
    line.strip_prefix("-A ")?.split_whitespace().next()
}

/// The words after `-j`/`-g` in a rule, outside quoted strings (comments).
fn jump_targets(rule: &str) -> impl Iterator<Item = &str> {
    let mut words = Vec::new();
    let (mut quoted, mut start) = (false, 0);
    for (i, c) in rule.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == ' ' && !quoted {
            words.push(&rule[start..i]);
            start = i + 1;
        }
    }
    words.push(&rule[start..]);
    let targets: Vec<&str> = words
        .windows(2)
        .filter(|w| matches!(w[0], "-j" | "-g" | "--jump" | "--goto"))
        .map(|w| w[1])
        .collect();
    targets.into_iter()
}

/// Restores `halves` with two processes parsing at once; the second's
/// COMMIT is written only after the first committed. Both are spawned
/// from the calling thread, so both run in its network namespace.
pub(super) fn restore_halves(
    family: Family,
    table: Table,
    halves: &Halves,
) -> Result<(), IptablesError> {
    let cmd = backend::current().backend.restore_cmd(family);
    let mut second = Command::new(cmd)
        .args(["--noflush", "-w"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| IptablesError::Spawn { cmd, source })?;
    let mut input = second.stdin.take().expect("piped stdin");
    let (first, fed) = std::thread::scope(|s| {
        let fed = s.spawn(|| input.write_all(halves.second.as_bytes()));
        let first = restore(family, table, &halves.first);
        (first, fed.join().expect("writing the second half"))
    });
    // Without COMMIT, the second process ends at EOF having written nothing.
    let committed = match (&first, fed) {
        (Ok(()), Ok(())) => input.write_all(b"COMMIT\n"),
        (_, fed) => fed,
    };
    drop(input);
    let out = second
        .wait_with_output()
        .map_err(|source| IptablesError::Spawn { cmd, source })?;
    first?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(IptablesError::Failed {
            cmd,
            table,
            failed_line: super::apply::failed_line(&stderr, &halves.second),
            stderr,
        });
    }
    committed.map_err(|source| IptablesError::Spawn { cmd, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pod chains jump to policy chains; the top chain jumps to the pods;
    /// INPUT (built in) gets the jump into the top chain.
    fn script() -> String {
        let mut s = String::from("*filter\n");
        let chains = ["TOP", "POD-1", "POD-2", "POL-A", "POL-B", "OLD"];
        for c in chains {
            s.push_str(&format!(":{c} - [0:0]\n"));
        }
        for line in [
            "-A TOP -d 10.0.0.1 -j POD-1",
            "-A TOP -d 10.0.0.2 -j POD-2",
            "-A POD-1 -j POL-A",
            "-A POD-1 -m comment --comment \"x -j TOP\" -j REJECT",
            "-A POD-2 -j POL-B",
            "-A POL-A -m set --match-set S src -j MARK --set-xmark 0x1/0x1",
            "-A POL-B -j ACCEPT",
            "-A OLD -j ACCEPT",
            "-D INPUT -j TOP",
            "-I INPUT 1 -j TOP",
        ] {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
        s
    }

    fn saved_with(chains: &[&str]) -> SavedTable {
        SavedTable {
            chains: chains.iter().map(|c| (c.to_string(), Vec::new())).collect(),
        }
    }

    fn appended(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with("-A "))
            .map(String::from)
            .collect()
    }

    #[test]
    fn leaves_and_chains_that_reach_only_them_go_first() {
        let h = halves(&script(), &saved_with(&["INPUT", "OLD"]), 1).expect("cut");
        // Half of the 8 rules: the policy chains, then the pod chain that
        // jumps to one of them; the top chain jumps to both pods, so waits.
        assert_eq!(
            h.first,
            "*filter\n:POD-1 - [0:0]\n:POL-A - [0:0]\n:POL-B - [0:0]\n\
             -A POD-1 -j POL-A\n-A POD-1 -m comment --comment \"x -j TOP\" -j REJECT\n\
             -A POL-A -m set --match-set S src -j MARK --set-xmark 0x1/0x1\n\
             -A POL-B -j ACCEPT\nCOMMIT\n"
        );
        // The rest keeps its order, the built-in chain's lines included,
        // and waits for its COMMIT.
        assert_eq!(
            h.second,
            "*filter\n:TOP - [0:0]\n:POD-2 - [0:0]\n:OLD - [0:0]\n-A TOP -d 10.0.0.1 -j POD-1\n\
             -A TOP -d 10.0.0.2 -j POD-2\n-A POD-2 -j POL-B\n-A OLD -j ACCEPT\n-D INPUT -j TOP\n\
             -I INPUT 1 -j TOP\n"
        );
        let mut both = appended(&h.first);
        both.extend(appended(&h.second));
        assert_eq!(both, appended(&script()), "every rule once");
    }

    #[test]
    fn a_chain_the_table_has_already_stays_in_the_second_half() {
        // POL-A exists: rewriting it in the first commit would change what
        // reaches it now; POD-1 jumps to it, so it waits too.
        let h = halves(&script(), &saved_with(&["INPUT", "OLD", "POL-A"]), 1).expect("cut");
        assert_eq!(
            h.first,
            "*filter\n:POD-2 - [0:0]\n:POL-B - [0:0]\n-A POD-2 -j POL-B\n-A POL-B -j ACCEPT\nCOMMIT\n"
        );
        assert!(h.second.contains(":POD-1 - [0:0]\n:POL-A - [0:0]\n"));
    }

    #[test]
    fn a_small_script_or_one_with_nothing_new_is_not_cut() {
        assert_eq!(halves(&script(), &saved_with(&["INPUT"]), 100), None);
        let all = saved_with(&["TOP", "POD-1", "POD-2", "POL-A", "POL-B", "OLD"]);
        assert_eq!(halves(&script(), &all, 1), None);
        assert_eq!(halves("*filter\n-A X -j Y\n", &all, 1), None, "no COMMIT");
    }

    #[test]
    fn jump_targets_skip_quoted_words() {
        let rule = "-m comment --comment \"a -j B\" -g C";
        assert_eq!(jump_targets(rule).collect::<Vec<_>>(), ["C"]);
        assert_eq!(
            jump_targets("-j MARK --set-xmark 0x1/0x1").collect::<Vec<_>>(),
            ["MARK"]
        );
    }
}
