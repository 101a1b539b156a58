//! Kubernetes Events (events.k8s.io/v1) for objects the agent skips or
//! stands in for, so their owners see why in `kubectl describe` and
//! `kubectl events`, not only in the node's log. Posted by kube-runtime's
//! [`Recorder`] (which turns a repeat within 6 minutes into a series
//! update), at most one per object and reason per [`INTERVAL`], in order,
//! by one task: a flapping object never floods the API server.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::locks::LockOrRecover;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Client,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

/// Between two Events of one object and reason.
pub const INTERVAL: Duration = Duration::from_secs(300);
/// The API server refuses a longer note.
const NOTE_LIMIT: usize = 1024;

/// One Warning to post.
#[derive(Clone, Debug, PartialEq)]
pub struct Warning {
    pub regarding: ObjectReference,
    /// PascalCase, as `kubectl describe` shows it (`Unreadable`).
    pub reason: &'static str,
    /// What the agent did about it (`KeepLastGood`, `DenyAll`, `Skip`).
    pub action: &'static str,
    /// For people: the object, the field and why.
    pub note: String,
}

/// Posts Warnings through one task; cheap to clone.
#[derive(Clone)]
pub struct EventPoster {
    queue: UnboundedSender<Warning>,
    last_sent: Arc<Mutex<HashMap<(String, &'static str), Instant>>>,
}

impl EventPoster {
    /// Starts the posting task on the current tokio runtime. The reporter
    /// is `ipwarden` on `node_name`.
    pub fn start(client: Client, node_name: &str) -> Self {
        let reporter = Reporter {
            controller: "ipwarden".into(),
            instance: Some(format!("ipwarden-{node_name}")),
        };
        let recorder = Recorder::new(client, reporter);
        let (queue, mut warnings) = unbounded_channel::<Warning>();
        tokio::spawn(async move {
            while let Some(w) = warnings.recv().await {
                let event = Event {
                    type_: EventType::Warning,
                    reason: w.reason.into(),
                    note: Some(truncated(&w.note)),
                    action: w.action.into(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&event, &w.regarding).await {
                    tracing::warn!(error = %e, reason = w.reason, "could not post an Event: {}", w.note);
                }
            }
        });
        Self {
            queue,
            last_sent: Arc::default(),
        }
    }

    /// Queues `w` unless one of its object and reason went out less than
    /// [`INTERVAL`] ago.
    pub fn warn(&self, w: Warning) {
        let key = (object_key(&w.regarding), w.reason);
        let now = Instant::now();
        {
            let mut sent = self.last_sent.lock_or_recover();
            sent.retain(|_, at| now.duration_since(*at) < INTERVAL);
            if sent.contains_key(&key) {
                tracing::debug!(
                    reason = w.reason,
                    "Event held back (one per {INTERVAL:?}): {}",
                    w.note
                );
                return;
            }
            sent.insert(key, now);
        }
        let _ = self.queue.send(w);
    }
}

fn object_key(r: &ObjectReference) -> String {
    format!(
        "{}/{}/{}/{}",
        r.kind.as_deref().unwrap_or_default(),
        r.namespace.as_deref().unwrap_or_default(),
        r.name.as_deref().unwrap_or_default(),
        r.uid.as_deref().unwrap_or_default()
    )
}

/// `note` cut to the API's limit on a character boundary.
fn truncated(note: &str) -> String {
    if note.len() <= NOTE_LIMIT {
        return note.to_string();
    }
    let mut end = NOTE_LIMIT - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_note_is_cut_on_a_char_boundary() {
        let long = "é".repeat(600);
        let cut = super::truncated(&long);
        assert!(cut.len() <= super::NOTE_LIMIT && cut.ends_with("..."));
        assert_eq!(super::truncated("short"), "short");
    }
}
