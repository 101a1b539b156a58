//! Several tables' plans applied at once: each table's read, render and
//! restore on a thread of its own. The policy controller's IPv4 and IPv6
//! filter tables share no chain, so its first IPv6 write (a few dozen
//! lines, but an `iptables-save` and an `ip6tables-restore` process of
//! their own) runs beside the IPv4 one instead of after it
//! (BENCHMARKS.md, "The policies' IPv6 write beside the IPv4 one").
//!
//! What [`apply_with`] guarantees per table holds for each: the table's
//! lock is held across its read-render-restore, and a restore is not
//! read back under [`ReadBack::UnlessAlone`] when no commit but ours
//! came between the reads and the last restore. With several restores
//! in flight that is judged for all of them together: the ruleset's
//! generation, read once before the reads and once after every restore,
//! moved by exactly the commits of our restores. Each restore changes
//! only its own table, so each table then holds its read plus its
//! script: its plan. One failed restore makes none of them alone (how
//! many commits it made before failing is not known), so the others are
//! read back.

use std::{collections::HashMap, sync::MutexGuard, time::Instant};

use super::{
    apply::{
        advance_unwritten_tables, apply_with, fingerprint, lock, read_back, slot, unchanged,
        write_script, IptablesError, ReadBack, Report, Verified, Wrote,
    },
    generation::{self, Stamp},
};
use crate::desired::{Family, Table, TablePlan};

/// [`apply_with`] of every plan, the writes at once; one result per plan,
/// in order. A plan that fails does not stop the others: each table's
/// result is its own. Plans naming the same (family, table) twice are
/// applied one after the other.
pub fn apply_all_with(
    plans: &[TablePlan],
    read_back_when: ReadBack,
) -> Vec<Result<Report, IptablesError>> {
    let mut slots: Vec<usize> = plans.iter().map(|p| slot(p.family, p.table)).collect();
    slots.sort_unstable();
    slots.dedup();
    if slots.len() != plans.len() || plans.len() < 2 {
        return plans
            .iter()
            .map(|p| apply_with(p, read_back_when))
            .collect();
    }
    let mut results: Vec<Option<Result<Report, IptablesError>>> =
        plans.iter().map(|_| None).collect();
    let mut valid = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        match plan.validate() {
            Ok(()) => valid.push(&plans[i]),
            Err(e) => results[i] = Some(Err(e.into())),
        }
    }
    let mut applied = write_all(&valid, read_back_when).into_iter();
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| applied.next().expect("a result per valid plan")))
        .collect()
}

/// What became of one plan's write.
enum Outcome {
    /// Verified on this generation: nothing read or written.
    Verified,
    Wrote(Wrote),
    Failed(IptablesError),
}

impl Outcome {
    /// Commits of a successful write (none for a table that matched).
    fn commits(&self) -> u32 {
        match self {
            Outcome::Wrote(w) => w.commits,
            _ => 0,
        }
    }
}

/// `plans` (valid, of distinct tables): locked, written at once, judged
/// together, then read back where needed and recorded; results in order.
fn write_all(plans: &[&TablePlan], read_back_when: ReadBack) -> Vec<Result<Report, IptablesError>> {
    let fingerprints: Vec<u64> = plans.iter().map(|p| fingerprint(p)).collect();
    let (outcomes, before, after) = {
        let waited = Instant::now();
        let mut guards = lock_in_order(plans);
        let waited = waited.elapsed();
        let before = generation::current();
        let due = forget_unverified(plans, &fingerprints, &mut guards, before.as_ref());
        let todo: Vec<&TablePlan> = plans
            .iter()
            .zip(&due)
            .filter(|(_, d)| **d)
            .map(|(p, _)| *p)
            .collect();
        let mut wrote = at_once(&todo, |plan| write_script(plan, waited)).into_iter();
        let outcomes: Vec<Outcome> = due
            .iter()
            .map(|&d| match (d, d.then(|| wrote.next()).flatten()) {
                (true, Some(Ok(w))) => Outcome::Wrote(w),
                (true, Some(Err(e))) => Outcome::Failed(e),
                _ => Outcome::Verified,
            })
            .collect();
        let any = due.contains(&true);
        (outcomes, before, any.then(generation::current).flatten())
    };
    let alone = alone(&outcomes, before.as_ref(), after.as_ref());
    let written: Vec<usize> = plans
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.commits() > 0)
        .map(|(p, _)| slot(p.family, p.table))
        .collect();
    if let (true, Some(from), Some(to)) = (alone, &before, &after) {
        advance_unwritten_tables(&written, from, to);
    }
    // The read-backs (without the locks, as apply_with's): those written
    // when the restores were not ours alone, or when always asked.
    let trusted = alone && read_back_when == ReadBack::UnlessAlone;
    let check: Vec<&TablePlan> = plans
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.commits() > 0 && !trusted)
        .map(|(p, _)| *p)
        .collect();
    let mut checked = at_once(&check, |plan| read_back(plan)).into_iter();
    // A table that matched is stamped where it was read, or where our
    // other restores left the ruleset when they were ours alone.
    let matched_at = if alone { after.clone() } else { before };
    plans
        .iter()
        .zip(fingerprints)
        .zip(outcomes)
        .map(|((plan, fingerprint), outcome)| {
            let wrote = match outcome {
                Outcome::Verified => return Ok(unchanged(plan)),
                Outcome::Failed(e) => return Err(e),
                Outcome::Wrote(w) => w,
            };
            let (canonical, stamp) = if wrote.commits == 0 {
                (true, matched_at.clone())
            } else if trusted {
                (true, after.clone())
            } else {
                (
                    checked.next().expect("a read-back per write")?,
                    after.clone(),
                )
            };
            if let (true, Some(stamp)) = (canonical, stamp) {
                record(plan, fingerprint, stamp);
            }
            Ok(Report {
                family: plan.family,
                table: plan.table,
                changes: wrote.changes,
                canonical,
            })
        })
        .collect()
}

/// Every plan's table lock, taken in slot order (whoever else holds more
/// than one takes them in the same order); the guards in plan order.
fn lock_in_order(plans: &[&TablePlan]) -> Vec<MutexGuard<'static, Option<Verified>>> {
    let mut order: Vec<usize> = (0..plans.len()).collect();
    order.sort_by_key(|&i| slot(plans[i].family, plans[i].table));
    let mut guards: Vec<Option<MutexGuard<'static, Option<Verified>>>> =
        plans.iter().map(|_| None).collect();
    for i in order {
        guards[i] = Some(lock(plans[i].family, plans[i].table));
    }
    guards.into_iter().flatten().collect()
}

/// Which plans to write: those not verified on `before`, whose stale
/// verification is dropped (as [`apply_with`] does).
fn forget_unverified(
    plans: &[&TablePlan],
    fingerprints: &[u64],
    guards: &mut [MutexGuard<'static, Option<Verified>>],
    before: Option<&Stamp>,
) -> Vec<bool> {
    plans
        .iter()
        .zip(fingerprints)
        .zip(guards.iter_mut())
        .map(|((plan, fingerprint), guard)| {
            let verified = guard.get_or_insert_with(HashMap::new);
            let owner = owner(plan);
            let seen = before.map(|s| (*fingerprint, s.clone()));
            if seen.is_some() && verified.get(&owner) == seen.as_ref() {
                return false;
            }
            verified.remove(&owner);
            true
        })
        .collect()
}

/// Were our restores the only commits from `before` to `after`? Not when
/// one failed (its commits are unknown), nor without a generation
/// (legacy backend).
fn alone(outcomes: &[Outcome], before: Option<&Stamp>, after: Option<&Stamp>) -> bool {
    if outcomes.iter().any(|o| matches!(o, Outcome::Failed(_))) {
        return false;
    }
    let commits: u32 = outcomes.iter().map(Outcome::commits).sum();
    match (before, after) {
        (Some(before), Some(after)) => after.follows(before, commits),
        _ => false,
    }
}

fn owner(plan: &TablePlan) -> (Family, Table, String) {
    (plan.family, plan.table, plan.tag.clone())
}

/// The kernel matched `plan` at `stamp`.
fn record(plan: &TablePlan, fingerprint: u64, stamp: Stamp) {
    lock(plan.family, plan.table)
        .get_or_insert_with(HashMap::new)
        .insert(owner(plan), (fingerprint, stamp));
}

/// Runs `work` on every item at once, the first on the calling thread
/// and each other on a scoped thread spawned from it (so in its network
/// namespace, as are the processes they start); results in order.
fn at_once<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let Some((first, rest)) = items.split_first() else {
        return Vec::new();
    };
    std::thread::scope(|s| {
        let work = &work;
        let others: Vec<_> = rest
            .iter()
            .map(|item| s.spawn(move || work(item)))
            .collect();
        let mut out = vec![work(first)];
        out.extend(
            others
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
        );
        out
    })
}
