//! A manifests file rewritten in place (`kubectl get -o yaml > f`, shell
//! redirection) is empty, or holds only its first documents, for a moment;
//! read in that moment it would delete every Service it held, or the last
//! ones. A read that finds fewer objects in a file than it held is held:
//! the last good content stays in force until the file has read the same
//! for [`HOLD`], then the shrink is taken as meant.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::KubeObject;

/// How long a shrunken file must read the same before it is believed.
/// `kubectl get -o yaml > f` truncates before kubectl has even connected,
/// so the gap can be seconds; 5 s also leaves a loaded node margin.
pub const HOLD: Duration = Duration::from_secs(5);

/// What to do with one read of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Take the new content.
    Accept,
    /// Keep the last good content; this shrink was first seen now.
    HoldNew,
    /// Keep the last good content; the shrink is not yet stable.
    Holding,
}

struct Held {
    objects: Vec<KubeObject>,
    since: Instant,
}

/// The files held at their last good content.
pub struct ShrinkHolds {
    held: BTreeMap<PathBuf, Held>,
    hold: Duration,
}

impl Default for ShrinkHolds {
    fn default() -> Self {
        Self::new(HOLD)
    }
}

/// Fewer objects than the file held: a read mid-write may cut it at a
/// document boundary, which parses (seen in the VM: a 300-object file read
/// with 298, one Service removed for 2.5 s), so any shrink is held, not
/// only an emptied file.
fn shrunk(old: usize, new: usize) -> bool {
    new < old
}

impl ShrinkHolds {
    /// Holding a shrink until it has read the same for `hold`.
    pub fn new(hold: Duration) -> Self {
        Self {
            held: BTreeMap::new(),
            hold,
        }
    }

    /// The verdict on `file` reading `new` while `old` objects of it are in
    /// force.
    pub fn check(&mut self, file: &Path, old: usize, new: &[KubeObject], now: Instant) -> Verdict {
        if !shrunk(old, new.len()) {
            self.held.remove(file);
            return Verdict::Accept;
        }
        match self.held.get(file) {
            Some(h) if h.objects == new && now.duration_since(h.since) >= self.hold => {
                self.held.remove(file);
                Verdict::Accept
            }
            Some(h) if h.objects == new => Verdict::Holding,
            _ => {
                let held = Held {
                    objects: new.to_vec(),
                    since: now,
                };
                self.held.insert(file.to_path_buf(), held);
                Verdict::HoldNew
            }
        }
    }

    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// A file removed: nothing of it is held.
    pub fn forget(&mut self, file: &Path) {
        self.held.remove(file);
    }

    /// How long until the first held file may be read again and believed.
    pub fn next_check(&self, now: Instant) -> Option<Duration> {
        self.held
            .values()
            .map(|h| (h.since + self.hold).saturating_duration_since(now))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespaces(n: usize) -> Vec<KubeObject> {
        let text: String = (0..n)
            .map(|i| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: n{i}}}\n---\n"))
            .collect();
        let mut loaded = super::super::manifests::Loaded::default();
        super::super::manifests::parse_text(Path::new("t.yaml"), &text, &mut loaded);
        loaded.objects
    }

    #[test]
    fn a_shrink_is_believed_once_it_has_read_the_same_for_the_hold() {
        let mut h = ShrinkHolds::default();
        let f = Path::new("/m/services.yaml");
        let t0 = Instant::now();
        assert_eq!(h.check(f, 0, &namespaces(0), t0), Verdict::Accept);
        assert_eq!(h.check(f, 10, &namespaces(12), t0), Verdict::Accept);
        // Cut at a document boundary: it parses, and is held too.
        assert_eq!(h.check(f, 10, &namespaces(9), t0), Verdict::HoldNew);
        assert_eq!(h.check(f, 10, &namespaces(10), t0), Verdict::Accept);
        assert_eq!(h.check(f, 10, &namespaces(0), t0), Verdict::HoldNew);
        assert_eq!(h.next_check(t0), Some(HOLD));
        assert_eq!(
            h.check(f, 10, &namespaces(0), t0 + HOLD / 2),
            Verdict::Holding
        );
        // Half written, then whole again: the hold ends, the content is taken.
        assert_eq!(h.check(f, 10, &namespaces(3), t0 + HOLD), Verdict::HoldNew);
        assert_eq!(h.check(f, 10, &namespaces(10), t0 + HOLD), Verdict::Accept);
        assert_eq!(h.next_check(t0), None);
        // Emptied on purpose: believed after the hold.
        assert_eq!(h.check(f, 10, &namespaces(0), t0), Verdict::HoldNew);
        assert_eq!(h.check(f, 10, &namespaces(0), t0 + HOLD), Verdict::Accept);
    }
}
