//! The race harness: two owners writing sets concurrently while an
//! observer dumps the kernel and records every moment a member its owner
//! wanted (and had confirmed written) was missing.
//!
//! `naive` swaps the store for what kube-router shipped: each owner keeps
//! a cached copy of every set, refreshed only now and then, and restores
//! all of it (atomically, with swap) after changing its own. The stale
//! copy of the other owner's sets is what lost kube-router's ExternalIP in
//! issue 1732; the harness must see that, or it proves nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use crate::{
    desired::{Family, Member, Protocol, SetSpec, SetType},
    kernel::ipset::{CreateSet, Element, IpsetClient, IpsetError, IpsetErrorKind, Request},
    locks::LockOrRecover,
};

use super::{execute, owners::Claim, Owner, SetStore, StoreError};

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Applies per owner.
    pub iterations: u64,
    pub naive: bool,
    /// Naive mode: iterations between refreshes of an owner's cached copy
    /// (kube-router re-read the kernel only on a full sync).
    pub refresh_every: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Observations of a confirmed member missing from the kernel.
    pub lost: u64,
    pub applies: u64,
    pub observations: u64,
}

/// What an owner has confirmed is in the kernel, and will not remove
/// before publishing again. Published before an apply (the members wanted
/// both before and after) and after it (everything now wanted).
#[derive(Default)]
struct Confirmed {
    generation: u64,
    sets: BTreeMap<String, BTreeSet<Member>>,
}

type Shared = Arc<Mutex<Confirmed>>;

/// An owner's desired sets at step k.
type Steps = fn(u64) -> Vec<SetSpec>;

const SERVICE_SET: &str = "ipwarden-svip-prt";

/// Service owner's sets at step `k`: fixed members plus a churning window
/// (an ExternalIP added, another removed, every step).
fn services_at(k: u64) -> Vec<SetSpec> {
    let mut members: BTreeSet<Member> = (1..=20)
        .map(|i| Member::ip_port([10, 96, 0, i].into(), Protocol::Tcp, 80))
        .collect();
    for j in k..k + 3 {
        let last = (j % 50 + 1) as u8;
        members.insert(Member::ip_port(
            [203, 0, 113, last].into(),
            Protocol::Tcp,
            443,
        ));
    }
    vec![spec(SERVICE_SET, SetType::HashIpPort, members)]
}

/// Policy owner's sets at step `k`: three fixed sets with churning members
/// and one set that comes and goes.
fn policies_at(k: u64) -> Vec<SetSpec> {
    let mut sets: Vec<SetSpec> = (0..3)
        .map(|s| {
            let members = (0..5)
                .map(|m| Member::ip([10, 244, s, ((k + m) % 40 + 1) as u8].into()))
                .collect();
            spec(&format!("IPW-SRC-{s}"), SetType::HashIp, members)
        })
        .collect();
    if k.is_multiple_of(2) {
        sets.push(spec(
            "IPW-DST-CHURN",
            SetType::HashIp,
            [Member::ip([10, 244, 9, 9].into())].into(),
        ));
    }
    sets
}

fn spec(name: &str, t: SetType, members: BTreeSet<Member>) -> SetSpec {
    SetSpec {
        name: name.into(),
        set_type: t,
        family: Family::V4,
        members,
    }
}

/// The kernel's members as desired members (the harness writes no other).
fn typed(elements: &[Element]) -> BTreeSet<Member> {
    elements.iter().filter_map(Element::to_desired).collect()
}

fn as_map(sets: &[SetSpec]) -> BTreeMap<String, BTreeSet<Member>> {
    sets.iter()
        .map(|s| (s.name.clone(), s.members.clone()))
        .collect()
}

fn intersect(
    a: &BTreeMap<String, BTreeSet<Member>>,
    b: &BTreeMap<String, BTreeSet<Member>>,
) -> BTreeMap<String, BTreeSet<Member>> {
    a.iter()
        .filter_map(|(n, m)| {
            b.get(n)
                .map(|m2| (n.clone(), m.intersection(m2).cloned().collect()))
        })
        .collect()
}

fn publish(shared: &Shared, sets: BTreeMap<String, BTreeSet<Member>>) {
    let mut c = shared.lock_or_recover();
    c.generation += 1;
    c.sets = sets;
}

/// Runs the harness in the calling thread's network namespace.
pub fn run(opts: Options) -> Result<Outcome, StoreError> {
    let store = SetStore::new(IpsetClient::new()?);
    store.register(Owner::new(
        "services",
        vec![Claim::Name(SERVICE_SET.into())],
    ))?;
    store.register(Owner::new("policies", vec![Claim::Prefix("IPW-".into())]))?;
    let owners: [(&'static str, Steps, Shared); 2] = [
        ("services", services_at, Shared::default()),
        ("policies", policies_at, Shared::default()),
    ];
    let stop = AtomicBool::new(false);
    let applies = AtomicU64::new(0);
    let (lost, observations) = std::thread::scope(|s| -> Result<(u64, u64), StoreError> {
        let mut writers = Vec::new();
        for (name, at, shared) in &owners {
            let (store, stop, applies) = (&store, &stop, &applies);
            writers.push(s.spawn(move || -> Result<(), StoreError> {
                let result = if opts.naive {
                    naive_owner(name, *at, shared, opts, applies)
                } else {
                    store_owner(store, name, *at, shared, opts.iterations, applies)
                };
                if result.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                result
            }));
        }
        let shared: Vec<&Shared> = owners.iter().map(|o| &o.2).collect();
        let stop = &stop;
        let observer = s.spawn(move || observe(&shared, stop));
        let mut first_err = None;
        for w in writers {
            if let Err(e) = w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) {
                first_err.get_or_insert(e);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let seen = observer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(seen),
        }
    })?;
    Ok(Outcome {
        lost,
        applies: applies.load(Ordering::Relaxed),
        observations,
    })
}

fn store_owner(
    store: &SetStore,
    owner: &str,
    at: fn(u64) -> Vec<SetSpec>,
    shared: &Shared,
    iterations: u64,
    applies: &AtomicU64,
) -> Result<(), StoreError> {
    let mut current = BTreeMap::new();
    for k in 0..iterations {
        let next = at(k);
        let next_map = as_map(&next);
        publish(shared, intersect(&current, &next_map));
        store.apply(owner, next)?;
        applies.fetch_add(1, Ordering::Relaxed);
        publish(shared, next_map.clone());
        current = next_map;
    }
    Ok(())
}

/// kube-router's way: a private cache of every set, restored whole.
fn naive_owner(
    owner: &str,
    at: fn(u64) -> Vec<SetSpec>,
    shared: &Shared,
    opts: Options,
    applies: &AtomicU64,
) -> Result<(), StoreError> {
    let mut client = IpsetClient::new()?;
    let mut cache: BTreeMap<String, SetSpec> = BTreeMap::new();
    let mut current = BTreeMap::new();
    let mine = |name: &str| {
        if owner == "services" {
            name == SERVICE_SET
        } else {
            name.starts_with("IPW-")
        }
    };
    for k in 0..opts.iterations {
        if k % opts.refresh_every.max(1) == 0 {
            cache = save_all(&mut client)?;
        }
        let next = at(k);
        let next_map = as_map(&next);
        publish(shared, intersect(&current, &next_map));
        cache.retain(|name, _| !mine(name));
        for s in next {
            cache.insert(s.name.clone(), s);
        }
        restore_all(&mut client, &cache, owner)?;
        applies.fetch_add(1, Ordering::Relaxed);
        publish(shared, next_map.clone());
        current = next_map;
    }
    Ok(())
}

fn save_all(client: &mut IpsetClient) -> Result<BTreeMap<String, SetSpec>, StoreError> {
    Ok(client
        .list_all()?
        .sets
        .into_iter()
        .filter(|s| {
            super::owners::has_our_prefix(s.name.as_str()) && !s.name.as_str().contains(".tmp")
        })
        .map(|s| {
            let name = s.name.to_string();
            (
                name.clone(),
                spec(&name, s.header.set_type, typed(&s.members)),
            )
        })
        .collect())
}

/// Every cached set written back: fill a temporary set, swap it in.
fn restore_all(
    client: &mut IpsetClient,
    cache: &BTreeMap<String, SetSpec>,
    owner: &str,
) -> Result<(), StoreError> {
    for s in cache.values() {
        let name = execute::name(&s.name)?;
        let tmp = execute::name(&format!(
            "{}.tmp-{}",
            &s.name[..s.name.len().min(20)],
            &owner[..1]
        ))?;
        let members = execute::elements(&s.name, &s.members)?;
        retry_busy(|| client.destroy(&tmp, true))?;
        client.execute(&Request::create(CreateSet::new(
            tmp.clone(),
            s.set_type,
            s.family,
        )))?;
        client.execute(&Request::add(tmp.clone(), members).exist_ok())?;
        client.execute(
            &Request::create(CreateSet::new(name.clone(), s.set_type, s.family)).exist_ok(),
        )?;
        retry_busy(|| client.swap(&tmp, &name))?;
        retry_busy(|| client.destroy(&tmp, true))?;
    }
    Ok(())
}

/// Runs `op` again while the kernel answers EBUSY: swap and destroy refuse
/// a set that another process is listing at that moment (what kube-router
/// #1081 saw as "Resource busy"); kube-router retried, so does this.
fn retry_busy(mut op: impl FnMut() -> Result<(), IpsetError>) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        match op() {
            Err(e) if e.is(IpsetErrorKind::InUse) && tries < 1000 => {
                tries += 1;
                std::thread::yield_now();
            }
            other => return other.map_err(Into::into),
        }
    }
}

/// Dumps the kernel until told to stop; returns (lost, observations).
fn observe(owners: &[&Shared], stop: &AtomicBool) -> Result<(u64, u64), StoreError> {
    let mut client = IpsetClient::new()?;
    let (mut lost, mut observations) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        for shared in owners {
            let (gen, wanted) = {
                let c = shared.lock_or_recover();
                (c.generation, c.sets.clone())
            };
            let mut missing = 0;
            for (set, members) in &wanted {
                let have: BTreeSet<Member> = match client.list(&execute::name(set)?) {
                    Ok(s) => typed(&s.members),
                    Err(e) if e.is(IpsetErrorKind::SetMissing) => BTreeSet::new(),
                    Err(e) => return Err(e.into()),
                };
                missing += members.difference(&have).count() as u64;
            }
            // Only a dump during which the owner published nothing counts:
            // then everything in `wanted` had to be there throughout.
            let still = shared.lock_or_recover().generation;
            if still == gen {
                observations += 1;
                lost += missing;
            }
        }
    }
    Ok((lost, observations))
}
