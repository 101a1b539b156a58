//! Running iptables-save and iptables-restore.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    io::Write,
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::{
    backend,
    generation::{self, Stamp},
    render::{self, Changes},
    split, SavedTable,
};
use crate::{
    desired::{Family, PlanError, Table, TablePlan},
    locks::LockOrRecover,
};

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("could not run {cmd}: {source}")]
    Spawn {
        cmd: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd} -t {table} failed: {stderr}{}", failed_line.as_deref().map(|l| format!(" (the line: {l})")).unwrap_or_default())]
    Failed {
        cmd: &'static str,
        table: Table,
        stderr: String,
        failed_line: Option<String>,
    },
}

/// What one apply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub family: Family,
    pub table: Table,
    pub changes: Changes,
    /// False when, right after the write, the kernel's text of our rules
    /// still differs from the plan's: the plan wrote a rule in a form that
    /// iptables-save prints differently, so every apply will rewrite it.
    pub canonical: bool,
}

/// `iptables-save -t TABLE` (or ip6tables-save), parsed.
pub fn read_table(family: Family, table: Table) -> Result<SavedTable, IptablesError> {
    Ok(SavedTable::parse(&save_text(family, table, &[])?))
}

/// `iptables-save ARGS -t TABLE` (or ip6tables-save): what it printed.
pub(super) fn save_text(
    family: Family,
    table: Table,
    args: &[&str],
) -> Result<String, IptablesError> {
    let table_name = table.to_string();
    let args = [args, &["-t", &table_name]].concat();
    run(
        backend::current().backend.save_cmd(family),
        table,
        &args,
        "",
    )
}

/// Brings one table of the calling thread's network namespace to `plan`
/// with a single `iptables-restore --noflush` call, then reads it back.
/// Held for a whole read-render-restore: two owners (the service and the
/// policy controller, on their own threads) share the built-in chains, and
/// a script rendered from a save the other owner has since changed would
/// insert at stale positions (a services jump above the policy jump) or
/// delete a rule that is gone. The xtables lock only covers one command.
/// The read-back after the restore writes nothing and runs without it.
/// It also guards what each owner last verified. One lock per family and
/// table: writers of different tables share no chain, so the services'
/// nat table never waits behind the policy controller's big filter write.
static APPLY: [Mutex<Option<Verified>>; 8] = [const { Mutex::new(None) }; 8];

/// The lock of one family's table, held across a read-render-restore.
pub(super) fn lock(family: Family, table: Table) -> MutexGuard<'static, Option<Verified>> {
    APPLY[slot(family, table)].lock_or_recover()
}

/// Where a family's table sits in [`APPLY`]: both enums are plain lists.
pub(super) fn slot(family: Family, table: Table) -> usize {
    family as usize * 4 + table as usize
}

/// Per owner (family, table, tag): the plan (its hash) the kernel was
/// last seen to match, and the ruleset's stamp taken before that read.
/// The same plan on the same stamp needs no read: nothing changed since.
pub(super) type Verified = HashMap<(Family, Table, String), (u64, Stamp)>;

/// How an apply makes sure of what it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBack {
    /// Read the table after every write and compare it with the plan
    /// ([`Report::canonical`]).
    Always,
    /// Only when the ruleset's generation shows another commit than ours
    /// since the read the script was rendered from. iptables-restore
    /// commits in one nf_tables transaction and each commit bumps the
    /// generation by one, so "ours alone" means the table now holds what
    /// was read plus the script: the plan. What it cannot show is a rule
    /// that iptables-save prints differently from how the plan wrote it,
    /// so this is for owners whose rule forms are tested canonical (the
    /// policy controller, whose 14k-line table costs seconds to read, and
    /// the service proxy's filter plans).
    /// Without a generation (legacy backend) it reads back as `Always`.
    UnlessAlone,
}

/// [`apply_with`] reading back after every write.
pub fn apply(plan: &TablePlan) -> Result<Report, IptablesError> {
    apply_with(plan, ReadBack::Always)
}

pub fn apply_with(plan: &TablePlan, read_back_when: ReadBack) -> Result<Report, IptablesError> {
    plan.validate()?;
    let owner = (plan.family, plan.table, plan.tag.clone());
    let fingerprint = fingerprint(plan);
    let written = {
        let waited = Instant::now();
        let mut guard = lock(plan.family, plan.table);
        let waited = waited.elapsed();
        let verified = guard.get_or_insert_with(HashMap::new);
        let before = generation::current();
        if before.is_some()
            && verified.get(&owner) == before.clone().map(|s| (fingerprint, s)).as_ref()
        {
            return Ok(unchanged(plan));
        }
        verified.remove(&owner);
        write(plan, before, waited)?
    };
    // The read-back runs without the lock: it writes nothing, so the other
    // owner's write need not wait for it (the policy controller's table is
    // thousands of rules). A write of the other owner in between bumps the
    // generation past `stamp`, so the next apply reads again.
    let (changes, canonical, stamp) = match written {
        Written::Nothing { changes, stamp } => (changes, true, stamp),
        Written::Script {
            changes,
            stamp,
            alone: Some(from),
        } => {
            if let Some(to) = &stamp {
                advance_unwritten_tables(&[slot(plan.family, plan.table)], &from, to);
            }
            match read_back_when {
                ReadBack::UnlessAlone => (changes, true, stamp),
                ReadBack::Always => (changes, read_back(plan)?, stamp),
            }
        }
        Written::Script { changes, stamp, .. } => (changes, read_back(plan)?, stamp),
    };
    if let (true, Some(stamp)) = (canonical, stamp) {
        lock(plan.family, plan.table)
            .get_or_insert_with(HashMap::new)
            .insert(owner, (fingerprint, stamp));
    }
    Ok(Report {
        family: plan.family,
        table: plan.table,
        changes,
        canonical,
    })
}

/// Has nothing committed in the calling thread's namespace since the
/// owner `tag`'s last apply to this table saw (or made) the kernel match
/// its plan? Then the table still holds that plan: an owner that knows
/// its plan has not changed since needs neither to render nor to apply
/// it. False without a generation (legacy backend) or a verified apply.
pub fn untouched_since_verified(family: Family, table: Table, tag: &str) -> bool {
    let Some(now) = generation::current() else {
        return false;
    };
    let owner = (family, table, tag.to_string());
    lock(family, table)
        .as_ref()
        .and_then(|verified| verified.get(&owner))
        .is_some_and(|(_, stamp)| *stamp == now)
}

/// Our restores into the `written` slots (family, table) were the only
/// commits from `from` to `to`, and a restore changes no other table:
/// every other table that was verified at `from` still matches at `to`.
/// Without this, the two families' writes of one sync would each leave
/// the other's stamp behind, and the next apply would read the whole
/// table again. (Other owners of a written table are not moved along:
/// the restore changed their table.)
pub(super) fn advance_unwritten_tables(written: &[usize], from: &Stamp, to: &Stamp) {
    // One lock at a time: no order to keep between them.
    for (_, other) in APPLY
        .iter()
        .enumerate()
        .filter(|(i, _)| !written.contains(i))
    {
        if let Some(verified) = other.lock_or_recover().as_mut() {
            for (_, stamp) in verified.values_mut() {
                if stamp == from {
                    *stamp = to.clone();
                }
            }
        }
    }
}

/// What [`write`] did, with the ruleset's stamp before the read that
/// will show whether the kernel matches the plan.
enum Written {
    /// The table already matched (the stamp is the one before the read).
    Nothing {
        changes: Changes,
        stamp: Option<Stamp>,
    },
    /// A script was restored (the stamp is the one right after it).
    Script {
        changes: Changes,
        stamp: Option<Stamp>,
        /// The stamp before the read, when the restore was the only
        /// commit since (see [`ReadBack::UnlessAlone`]).
        alone: Option<Stamp>,
    },
}

/// Read the table and write what differs (held under the table's lock).
fn write(
    plan: &TablePlan,
    before: Option<Stamp>,
    waited: Duration,
) -> Result<Written, IptablesError> {
    let Wrote { changes, commits } = write_script(plan, waited)?;
    if commits == 0 {
        return Ok(Written::Nothing {
            changes,
            stamp: before,
        });
    }
    let after = generation::current();
    let alone = match (before, &after) {
        (Some(before), Some(after)) if after.follows(&before, commits) => Some(before),
        _ => None,
    };
    Ok(Written::Script {
        changes,
        stamp: after,
        alone,
    })
}

/// What [`write_script`] changed, and in how many commits (none: the
/// table already matched the plan).
pub(super) struct Wrote {
    pub changes: Changes,
    pub commits: u32,
}

/// Reads the table, renders the script of what differs and restores it
/// (the caller holds the table's lock and reads the generations).
pub(super) fn write_script(plan: &TablePlan, waited: Duration) -> Result<Wrote, IptablesError> {
    let start = Instant::now();
    let saved = read_table(plan.family, plan.table)?;
    let (script, changes) = render::script(plan, &saved);
    let rendered = start.elapsed();
    let Some(script) = script else {
        return Ok(Wrote {
            changes,
            commits: 0,
        });
    };
    let commits = restore_rendered(plan, &saved, &script)?;
    // Where a first apply's time goes (BENCHMARKS.md, the 10k start).
    tracing::debug!(
        table = %plan.table, family = ?plan.family, tag = %plan.tag,
        "iptables apply: lock waited {waited:.1?}, read and rendered {rendered:.1?}, restored {} lines ({} bytes, {commits} commits) in {:.1?}",
        script.lines().count(), script.len(), start.elapsed() - rendered,
    );
    Ok(Wrote { changes, commits })
}

/// Restores `script`, rendered from `saved`: a large one as two halves
/// parsing at once on the nft backend (`split.rs`). Returns the commits.
fn restore_rendered(
    plan: &TablePlan,
    saved: &SavedTable,
    script: &str,
) -> Result<u32, IptablesError> {
    let halves = super::nft_backend()
        .then(|| split::halves(script, saved, split::MIN_RULES))
        .flatten();
    match halves {
        Some(halves) => split::restore_halves(plan.family, plan.table, &halves).map(|()| 2),
        None => restore(plan.family, plan.table, script).map(|()| 1),
    }
}

/// Does the kernel's text of our rules now match the plan? False when
/// iptables-save prints a rule differently from how the plan wrote it.
pub(super) fn read_back(plan: &TablePlan) -> Result<bool, IptablesError> {
    let start = Instant::now();
    let after = read_table(plan.family, plan.table)?;
    let (again, _) = render::script(plan, &after);
    tracing::debug!(
        table = %plan.table, family = ?plan.family, tag = %plan.tag,
        "iptables apply: read back in {:.1?}", start.elapsed(),
    );
    if again.is_some() {
        tracing::warn!(
            table = %plan.table, family = ?plan.family,
            "iptables-save prints some of our rules differently from how we wrote them; they will be rewritten on every apply"
        );
    }
    Ok(again.is_none())
}

pub(super) fn unchanged(plan: &TablePlan) -> Report {
    Report {
        family: plan.family,
        table: plan.table,
        changes: Changes::default(),
        canonical: true,
    }
}

/// A hash of everything in the plan that decides what is written.
pub(super) fn fingerprint(plan: &TablePlan) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    plan.hash(&mut h);
    h.finish()
}

pub(super) fn restore(family: Family, table: Table, script: &str) -> Result<(), IptablesError> {
    // -w: wait for the xtables lock instead of failing when another
    // program (kubelet, a CNI) holds it.
    let cmd = backend::current().backend.restore_cmd(family);
    run(cmd, table, &["--noflush", "-w"], script).map(drop)
}

/// Runs `cmd ARGS` with `input` on its standard input: what it printed,
/// or its stderr and the input line it names as the error.
fn run(
    cmd: &'static str,
    table: Table,
    args: &[&str],
    input: &str,
) -> Result<String, IptablesError> {
    let spawn = |source| IptablesError::Spawn { cmd, source };
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(spawn)?;
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if out.status.success() {
        return Ok(text(out.stdout));
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(IptablesError::Failed {
        cmd,
        table,
        failed_line: failed_line(&stderr, input),
        stderr,
    })
}

/// A command's output as text, in its own buffer cut to its length: a
/// save of the policies' filter table at 10k is 1.2 MiB read into a buffer
/// grown to 2 MiB, and copying it beside that buffer was the restarted
/// agent's highest heap (BENCHMARKS.md, "Stop 20: peak RSS at 10k").
pub(super) fn text(mut bytes: Vec<u8>) -> String {
    bytes.shrink_to_fit();
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The input line iptables-restore complains about: legacy says
/// "line N failed", nft says "Error occurred at line: N".
pub(super) fn failed_line(stderr: &str, script: &str) -> Option<String> {
    let n: usize = stderr.split("line").skip(1).find_map(|rest| {
        let digits: String = rest
            .trim_start_matches([' ', ':'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })?;
    // nft reports errors at COMMIT, which names nothing useful.
    let line = script.lines().nth(n.checked_sub(1)?)?;
    (line != "COMMIT").then(|| line.to_string())
}

#[cfg(test)]
mod tests {
    /// The output is kept as read, cut to its length; bytes that are not
    /// UTF-8 read as U+FFFD, as `from_utf8_lossy` made them before.
    #[test]
    fn output_text_is_the_bytes_cut_to_length() {
        let mut read = Vec::with_capacity(4096);
        read.extend_from_slice(b"-A FOO -j ACCEPT\n");
        let text = super::text(read);
        assert_eq!(text, "-A FOO -j ACCEPT\n");
        assert!(text.capacity() < 4096, "capacity {}", text.capacity());
        assert_eq!(super::text(b"a\xffb".to_vec()), "a\u{fffd}b");
    }

    #[test]
    fn failed_line_is_found_from_restore_stderr() {
        let script = "*filter\n:A - [0:0]\n-A A -j NOPE\nCOMMIT\n";
        assert_eq!(
            super::failed_line("iptables-restore: line 3 failed", script).as_deref(),
            Some("-A A -j NOPE")
        );
        assert_eq!(
            super::failed_line(
                "Chain 'X' does not exist\nError occurred at line: 3\n",
                script
            )
            .as_deref(),
            Some("-A A -j NOPE")
        );
        assert_eq!(super::failed_line("something else", script), None);
    }
}
