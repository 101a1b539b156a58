//! An in-memory kernel for the store's unit tests. It answers as the
//! kernel does (ip_set_core.c, and iptables for the rule switch): EEXIST
//! on a create or add of what exists (unless `-exist`), ENOENT on a missing
//! set or member, "in use" when destroying or renaming a set a rule
//! references, a type mismatch on a swap across types. It logs every call
//! so tests can check the order of writes, and a test marks which sets a
//! rule references, since there are no rules here.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use super::SetKernel;
use crate::kernel::ipset::IpsetErrorKind::{
    InUse, MemberExists, MemberMissing, SetExists, SetMissing, WrongType,
};
use crate::{
    desired::Table,
    kernel::{
        ipset::{
            CreateSet, Element, Entry, IpSet, IpsetError, IpsetErrorKind, Listing, Op, Request,
            SetHeader, SetName, SetStats,
        },
        iptables::IptablesError,
    },
    locks::LockOrRecover,
};

/// ipset's own errnos (the kernel's `enum ipset_errno`).
const IPSET_ERR_BUSY: i32 = 4100;
const IPSET_ERR_EXIST_SETNAME2: i32 = 4101;
const IPSET_ERR_TYPE_MISMATCH: i32 = 4102;
const IPSET_ERR_EXIST: i32 = 4103;
const IPSET_ERR_REFERENCED: i32 = 4108;
/// The kernel's defaults when a create names none.
const DEFAULT_HASHSIZE: u32 = 1024;
const DEFAULT_MAXELEM: u32 = 65_536;

/// One set: how it was created and its members, keyed as the kernel
/// keys them (by entry; extensions are values).
#[derive(Clone, Debug)]
struct FakeSet {
    spec: CreateSet,
    members: BTreeMap<Entry, Element>,
}

impl FakeSet {
    /// ip_set_core's `same_set` for `create -exist`: type, family and the
    /// options a resize does not change.
    fn same_as(&self, other: &CreateSet) -> bool {
        let s = &self.spec;
        s.set_type == other.set_type
            && s.family == other.family
            && s.maxelem.unwrap_or(DEFAULT_MAXELEM) == other.maxelem.unwrap_or(DEFAULT_MAXELEM)
            && s.timeout == other.timeout
            && s.counters == other.counters
            && s.comment == other.comment
    }
}

#[derive(Default)]
struct State {
    sets: BTreeMap<String, FakeSet>,
    /// Rules matching each set (what iptables would hold).
    references: BTreeMap<String, usize>,
    log: Vec<String>,
}

/// The fake; clones share one state, so a test keeps a handle to look
/// inside after handing one to the store.
#[derive(Clone, Default)]
pub(super) struct FakeKernel {
    state: Arc<Mutex<State>>,
}

impl FakeKernel {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock_or_recover()
    }

    /// A set another program made, as `ipset create NAME TYPE` would.
    pub(super) fn with_set(self, spec: CreateSet, members: &[Element]) -> Self {
        let members = members.iter().map(|m| (m.entry, m.clone())).collect();
        let set = FakeSet {
            spec: spec.clone(),
            members,
        };
        self.state().sets.insert(spec.name.to_string(), set);
        self
    }

    /// An iptables rule now matches `set`.
    pub(super) fn reference(&self, set: &str) {
        *self.state().references.entry(set.to_string()).or_default() += 1;
    }

    /// How many rules match `set`.
    pub(super) fn references(&self, set: &str) -> usize {
        self.state().references.get(set).copied().unwrap_or(0)
    }

    /// The set as `ipset list` would show it, or None.
    pub(super) fn set(&self, name: &str) -> Option<IpSet> {
        self.state().sets.get(name).map(|s| listing(name, s))
    }

    /// The names of every set.
    pub(super) fn names(&self) -> Vec<String> {
        self.state().sets.keys().cloned().collect()
    }

    /// Every call so far, one line each ("create S hash:ip", "add S
    /// 10.0.0.1", "switch A B", "list S", "list -n"); then forgotten.
    pub(super) fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut self.state().log)
    }

    /// As [`Self::take_log`], the writes only (no lists).
    pub(super) fn take_writes(&self) -> Vec<String> {
        self.take_log()
            .into_iter()
            .filter(|l| !l.starts_with("list"))
            .collect()
    }
}

impl SetKernel for FakeKernel {
    fn execute(&mut self, request: &Request) -> Result<(), IpsetError> {
        let mut state = self.state();
        state.log.push(log_line(request));
        state.run(request)
    }

    fn list_names(&mut self) -> Result<Vec<String>, IpsetError> {
        let mut state = self.state();
        state.log.push("list -n".into());
        Ok(state.sets.keys().cloned().collect())
    }

    fn list(&mut self, set: &SetName) -> Result<IpSet, IpsetError> {
        let mut state = self.state();
        state.log.push(format!("list {set}"));
        state
            .sets
            .get(set.as_str())
            .map(|s| listing(set.as_str(), s))
            .ok_or_else(|| missing(Op::List, set.as_str()))
    }

    /// As the kernel's dump with IPSET_FLAG_LIST_HEADER: each set's header
    /// and stats (entries counted, references), no member.
    fn list_headers(&mut self) -> Result<Listing, IpsetError> {
        let mut state = self.state();
        state.log.push("list -t".into());
        let sets = state
            .sets
            .iter()
            .map(|(name, s)| state.header_with_stats(name, s))
            .collect();
        Ok(Listing {
            sets,
            unsupported: Vec::new(),
        })
    }

    fn list_header(&mut self, set: &SetName) -> Result<IpSet, IpsetError> {
        let mut state = self.state();
        state.log.push(format!("list -t {set}"));
        state
            .sets
            .get(set.as_str())
            .map(|s| state.header_with_stats(set.as_str(), s))
            .ok_or_else(|| missing(Op::List, set.as_str()))
    }

    fn switch_references(&mut self, from: &str, to: &str) -> Result<usize, IptablesError> {
        let mut state = self.state();
        state.log.push(format!("switch {from} {to}"));
        let moved = state.references.get(from).copied().unwrap_or(0);
        if moved == 0 {
            return Ok(0);
        }
        // iptables-restore refuses a rule matching a set that is not there.
        if !state.sets.contains_key(to) {
            return Err(IptablesError::Failed {
                cmd: "iptables-restore",
                table: Table::Filter,
                stderr: format!("Set {to} doesn't exist."),
                failed_line: None,
            });
        }
        state.references.remove(from);
        *state.references.entry(to.to_string()).or_default() += moved;
        Ok(moved)
    }
}

impl State {
    /// The set as `ipset list -t NAME` shows it: header and stats.
    fn header_with_stats(&self, name: &str, s: &FakeSet) -> IpSet {
        IpSet {
            stats: Some(SetStats {
                references: self.references.get(name).copied().unwrap_or(0) as u32,
                entries: s.members.len() as u32,
                ..SetStats::default()
            }),
            ..header(name, s)
        }
    }

    fn run(&mut self, request: &Request) -> Result<(), IpsetError> {
        match request {
            Request::Create { spec, exist_ok } => self.create(spec, *exist_ok),
            Request::Destroy { set, missing_ok } => self.destroy(set.as_str(), *missing_ok),
            Request::Flush { set } => self.set_mut(Op::Flush, set).map(|s| s.members.clear()),
            Request::Rename { from, to } => self.rename(from.as_str(), to.as_str()),
            Request::Swap { a, b } => self.swap(a.as_str(), b.as_str()),
            Request::Add {
                set,
                members,
                exist_ok,
            } => self.add(set, members, *exist_ok),
            Request::Del {
                set,
                members,
                missing_ok,
            } => self.del(set, members, *missing_ok),
        }
    }

    fn create(&mut self, spec: &CreateSet, exist_ok: bool) -> Result<(), IpsetError> {
        let name = spec.name.to_string();
        match self.sets.get(&name) {
            Some(s) if exist_ok && s.same_as(spec) => Ok(()),
            Some(_) => Err(error(Op::Create, &name, SetExists, libc::EEXIST)),
            None => {
                let members = BTreeMap::new();
                let spec = spec.clone();
                self.sets.insert(name, FakeSet { spec, members });
                Ok(())
            }
        }
    }

    fn destroy(&mut self, set: &str, missing_ok: bool) -> Result<(), IpsetError> {
        if !self.sets.contains_key(set) {
            return match missing_ok {
                true => Ok(()),
                false => Err(missing(Op::Destroy, set)),
            };
        }
        if self.references.get(set).is_some_and(|n| *n > 0) {
            return Err(in_use(Op::Destroy, set, IPSET_ERR_BUSY));
        }
        self.sets.remove(set);
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), IpsetError> {
        if !self.sets.contains_key(from) {
            return Err(missing(Op::Rename, from));
        }
        if self.sets.contains_key(to) {
            return Err(error(Op::Rename, to, SetExists, IPSET_ERR_EXIST_SETNAME2));
        }
        if self.references.get(from).is_some_and(|n| *n > 0) {
            return Err(in_use(Op::Rename, from, IPSET_ERR_REFERENCED));
        }
        let mut set = self.sets.remove(from).expect("checked above");
        set.spec.name = SetName::new(to).expect("a name the kernel took");
        self.sets.insert(to.to_string(), set);
        Ok(())
    }

    /// Contents trade places; names, and so the rules that use them, stay.
    fn swap(&mut self, a: &str, b: &str) -> Result<(), IpsetError> {
        let (Some(first), Some(second)) = (self.sets.get(a), self.sets.get(b)) else {
            return Err(match self.sets.contains_key(a) {
                false => missing(Op::Swap, a),
                true => error(Op::Swap, b, SetMissing, IPSET_ERR_EXIST_SETNAME2),
            });
        };
        let (x, y) = (&first.spec, &second.spec);
        if x.set_type != y.set_type || x.family != y.family {
            let e = error(Op::Swap, a, WrongType, IPSET_ERR_TYPE_MISMATCH);
            return Err(e.detail("set types or families differ"));
        }
        let mut first = first.clone();
        let mut second = second.clone();
        std::mem::swap(&mut first.members, &mut second.members);
        std::mem::swap(&mut first.spec.hashsize, &mut second.spec.hashsize);
        std::mem::swap(&mut first.spec.maxelem, &mut second.spec.maxelem);
        self.sets.insert(a.to_string(), first);
        self.sets.insert(b.to_string(), second);
        Ok(())
    }

    /// Members one by one, as the kernel takes an ADT batch: the ones
    /// before a refusal stay added.
    fn add(
        &mut self,
        set: &SetName,
        members: &[Element],
        exist_ok: bool,
    ) -> Result<(), IpsetError> {
        let s = self.set_mut(Op::Add, set)?;
        for m in members {
            check_fits(Op::Add, set, &s.spec, m)?;
            if !exist_ok && s.members.contains_key(&m.entry) {
                let e = error(Op::Add, set.as_str(), MemberExists, IPSET_ERR_EXIST);
                return Err(with_member(e, m));
            }
            s.members.insert(m.entry, m.clone());
        }
        Ok(())
    }

    fn del(
        &mut self,
        set: &SetName,
        members: &[Element],
        missing_ok: bool,
    ) -> Result<(), IpsetError> {
        let s = self.set_mut(Op::Del, set)?;
        for m in members {
            if s.members.remove(&m.entry).is_none() && !missing_ok {
                let e = error(Op::Del, set.as_str(), MemberMissing, IPSET_ERR_EXIST);
                return Err(with_member(e, m));
            }
        }
        Ok(())
    }

    fn set_mut(&mut self, op: Op, set: &SetName) -> Result<&mut FakeSet, IpsetError> {
        self.sets
            .get_mut(set.as_str())
            .ok_or_else(|| missing(op, set.as_str()))
    }
}

/// The real client refuses, before sending, a member the set cannot hold.
fn check_fits(op: Op, set: &SetName, spec: &CreateSet, m: &Element) -> Result<(), IpsetError> {
    match m.entry.mismatch(spec.set_type, spec.family) {
        None => Ok(()),
        Some(detail) => Err(IpsetError::new(op, set.as_str(), WrongType, None).detail(detail)),
    }
}

fn listing(name: &str, s: &FakeSet) -> IpSet {
    IpSet {
        members: s.members.values().cloned().collect(),
        ..header(name, s)
    }
}

/// The set as `ipset list -t` shows it: no members.
fn header(name: &str, s: &FakeSet) -> IpSet {
    IpSet {
        name: SetName::new(name).expect("a name the kernel took"),
        header: SetHeader {
            set_type: s.spec.set_type,
            family: s.spec.family,
            hashsize: s.spec.hashsize.unwrap_or(DEFAULT_HASHSIZE),
            maxelem: s.spec.maxelem.unwrap_or(DEFAULT_MAXELEM),
            netmask: None,
            timeout: s.spec.timeout,
            counters: s.spec.counters,
            comment: s.spec.comment,
            skbinfo: false,
            bucketsize: None,
            initval: None,
        },
        stats: None,
        members: Vec::new(),
    }
}

fn log_line(request: &Request) -> String {
    match request {
        Request::Create { spec, .. } => format!("create {} {}", spec.name, spec.set_type),
        Request::Add { set, members, .. } => format!("add {set}{}", entries(members)),
        Request::Del { set, members, .. } => format!("del {set}{}", entries(members)),
        other => other.to_string(),
    }
}

fn entries(members: &[Element]) -> String {
    members.iter().map(|m| format!(" {}", m.entry)).collect()
}

fn error(op: Op, set: &str, kind: IpsetErrorKind, errno: i32) -> IpsetError {
    IpsetError::new(op, set, kind, Some(errno))
}

fn with_member(e: IpsetError, m: &Element) -> IpsetError {
    IpsetError {
        member: Some(Box::new(m.clone())),
        ..e.detail(m.entry.to_string())
    }
}

fn missing(op: Op, set: &str) -> IpsetError {
    error(op, set, SetMissing, libc::ENOENT)
}

fn in_use(op: Op, set: &str, errno: i32) -> IpsetError {
    error(op, set, InUse, errno)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Family, SetType};

    fn name(s: &str) -> SetName {
        SetName::new(s).unwrap()
    }

    fn ip(s: &str) -> Element {
        Element::parse(SetType::HashIp, s).unwrap()
    }

    fn hash_ip(s: &str) -> CreateSet {
        CreateSet::new(name(s), SetType::HashIp, Family::V4)
    }

    fn run(k: &mut FakeKernel, r: Request) -> Result<(), IpsetError> {
        k.execute(&r)
    }

    #[test]
    fn it_refuses_what_exists_unless_told_exist() {
        let mut k = FakeKernel::default();
        run(&mut k, Request::create(hash_ip("a"))).unwrap();
        let again = run(&mut k, Request::create(hash_ip("a")));
        assert!(
            matches!(again, Err(IpsetError { kind: SetExists, errno, .. }) if errno == Some(libc::EEXIST))
        );
        run(&mut k, Request::create(hash_ip("a")).exist_ok()).unwrap();
        let other = CreateSet::new(name("a"), SetType::HashNet, Family::V4);
        let clash = run(&mut k, Request::create(other).exist_ok());
        assert!(
            matches!(
                clash,
                Err(IpsetError {
                    kind: SetExists,
                    ..
                })
            ),
            "-exist does not cover a set of another type"
        );
        run(&mut k, Request::add(name("a"), [ip("10.0.0.1")])).unwrap();
        let twice = run(&mut k, Request::add(name("a"), [ip("10.0.0.1")]));
        assert!(matches!(
            twice,
            Err(IpsetError {
                kind: MemberExists,
                ..
            })
        ));
        run(&mut k, Request::add(name("a"), [ip("10.0.0.1")]).exist_ok()).unwrap();
    }

    #[test]
    fn it_answers_enoent_for_missing_sets_and_members() {
        let mut k = FakeKernel::default().with_set(hash_ip("a"), &[]);
        for r in [
            Request::destroy(name("b")),
            Request::flush(name("b")),
            Request::add(name("b"), [ip("10.0.0.1")]),
        ] {
            assert!(matches!(
                run(&mut k, r),
                Err(IpsetError {
                    kind: SetMissing,
                    ..
                })
            ));
        }
        assert!(k.list(&name("b")).is_err());
        run(&mut k, Request::destroy(name("b")).exist_ok()).unwrap();
        let del = run(&mut k, Request::del(name("a"), [ip("10.0.0.1")]));
        assert!(matches!(
            del,
            Err(IpsetError {
                kind: MemberMissing,
                ..
            })
        ));
        run(&mut k, Request::del(name("a"), [ip("10.0.0.1")]).exist_ok()).unwrap();
    }

    #[test]
    fn a_referenced_set_is_in_use_until_its_rules_move() {
        let mut k = FakeKernel::default()
            .with_set(hash_ip("a"), &[])
            .with_set(hash_ip("b"), &[]);
        k.reference("a");
        let busy = run(&mut k, Request::destroy(name("a")).exist_ok());
        assert!(matches!(busy, Err(IpsetError { kind: InUse, .. })));
        let renamed = run(&mut k, Request::rename(name("a"), name("c")));
        assert!(matches!(renamed, Err(IpsetError { kind: InUse, .. })));
        assert!(
            k.switch_references("a", "gone").is_err(),
            "iptables refuses a rule on a missing set"
        );
        assert_eq!(k.switch_references("a", "b").unwrap(), 1);
        run(&mut k, Request::destroy(name("a"))).unwrap();
        assert_eq!(k.references("b"), 1);
        assert_eq!(k.names(), ["b"]);
    }

    #[test]
    fn swap_trades_contents_of_one_type_only() {
        let mut k = FakeKernel::default()
            .with_set(hash_ip("a"), &[ip("10.0.0.1")])
            .with_set(hash_ip("b"), &[ip("10.0.0.2")])
            .with_set(CreateSet::new(name("n"), SetType::HashNet, Family::V4), &[]);
        run(&mut k, Request::swap(name("a"), name("b"))).unwrap();
        assert_eq!(k.set("a").unwrap().members, [ip("10.0.0.2")]);
        assert_eq!(k.set("b").unwrap().members, [ip("10.0.0.1")]);
        let mismatch = run(&mut k, Request::swap(name("a"), name("n")));
        assert!(matches!(
            mismatch,
            Err(IpsetError {
                kind: WrongType,
                ..
            })
        ));
        let partner = run(&mut k, Request::swap(name("a"), name("zz")));
        assert!(
            matches!(partner, Err(IpsetError { kind: SetMissing, ref set, .. }) if set == "zz")
        );
    }

    #[test]
    fn a_member_of_another_type_is_refused() {
        let mut k = FakeKernel::default().with_set(hash_ip("a"), &[]);
        let net = Element::parse(SetType::HashNet, "10.0.0.0/24").unwrap();
        let wrong = run(&mut k, Request::add(name("a"), [net]));
        assert!(matches!(
            wrong,
            Err(IpsetError {
                kind: WrongType,
                ..
            })
        ));
    }

    #[test]
    fn the_log_reads_like_the_commands() {
        let mut k = FakeKernel::default();
        run(&mut k, Request::create(hash_ip("a"))).unwrap();
        run(&mut k, Request::add(name("a"), [ip("10.0.0.1")])).unwrap();
        k.list_names().unwrap();
        assert_eq!(
            k.take_log(),
            ["create a hash:ip", "add a 10.0.0.1", "list -n"]
        );
    }
}
