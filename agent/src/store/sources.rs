//! The hook through which the eBPF data plane learns the sources whose
//! traffic it must never mark (this node's egress-restricted pods). The
//! store holds it beside the service mirror, so the auditor compares it on
//! the same timer; bpf/ implements it and cli/ wires it in.
//!
//! Ordering in time is the point: a source is added before the chains
//! that restrict it are written, and removed only after they are gone, so
//! no packet of a restricted pod is ever marked past its policy chain.

use std::{collections::BTreeSet, net::IpAddr};

use super::SetStore;

/// A writer of the restricted sources (the BPF map).
pub trait SourceSink {
    /// Adds `sources`, keeping what is there: nothing is removed.
    fn add(&mut self, sources: &BTreeSet<IpAddr>);

    /// Makes the content exactly `sources` (only the difference is
    /// written); returns how many entries were wrong.
    fn settle(&mut self, sources: &BTreeSet<IpAddr>) -> usize;
}

/// When the policy controller publishes its restricted sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourcePhase {
    /// Before its chains: the new sources join, none leaves.
    BeforeChains,
    /// After its chains were written: the content becomes exactly these.
    AfterChains,
}

/// The store's side: the sink and what it must hold at least.
#[derive(Default)]
pub(super) struct Sources {
    sink: Option<Box<dyn SourceSink + Send>>,
    /// What the sink must hold: the last settled content, plus whatever
    /// joined since (a pass between its two phases, or one that failed
    /// after the first). None until the policy controller published.
    floor: Option<BTreeSet<IpAddr>>,
}

impl Sources {
    /// The auditor's pass: the sink brought back to the floor.
    pub(super) fn audit(&mut self) -> usize {
        match (self.sink.as_mut(), self.floor.as_ref()) {
            (Some(sink), Some(floor)) => sink.settle(floor),
            _ => 0,
        }
    }
}

impl SetStore {
    /// Where the restricted sources go. A sink wired after the policy
    /// controller published gets its content at once (added only: what it
    /// held before, pinned by an earlier run, stays until a pass settles).
    pub fn set_source_sink(&self, mut sink: Box<dyn SourceSink + Send>) {
        let mut inner = self.lock();
        if let Some(floor) = &inner.sources.floor {
            sink.add(floor);
        }
        inner.sources.sink = Some(sink);
    }

    /// Publishes the sources the policy controller restricts, in `phase`.
    pub fn restrict_sources(&self, sources: &BTreeSet<IpAddr>, phase: SourcePhase) {
        let mut inner = self.lock();
        let s = &mut inner.sources;
        match phase {
            SourcePhase::BeforeChains => {
                s.floor
                    .get_or_insert_with(BTreeSet::new)
                    .extend(sources.iter().copied());
                if let Some(sink) = s.sink.as_mut() {
                    sink.add(sources);
                }
            }
            SourcePhase::AfterChains => {
                s.floor = Some(sources.clone());
                if let Some(sink) = s.sink.as_mut() {
                    sink.settle(sources);
                }
            }
        }
    }
}
