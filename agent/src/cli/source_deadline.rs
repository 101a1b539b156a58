//! /healthz fails when the source has not completed its first list within
//! `--source-list-deadline` of start: an agent that can never see the
//! cluster is broken, and the kubelet should restart it (and someone look).

use std::{sync::Arc, time::Duration};

use crate::{api::Metrics, cluster::Source};

/// How often the source is looked at once the deadline passed.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Waits out the deadline, then holds /healthz failing, naming what fails,
/// until every resource has listed.
pub async fn watch(source: Arc<dyn Source>, metrics: Metrics, deadline: Duration) {
    tokio::time::sleep(deadline).await;
    while !source.listed() {
        metrics.set_source_unhealthy(Some(why(source.as_ref(), deadline)));
        tokio::time::sleep(CHECK_EVERY).await;
    }
    metrics.set_source_unhealthy(None);
}

fn why(source: &dyn Source, deadline: Duration) -> String {
    let failing: Vec<String> = source
        .failing()
        .into_iter()
        .map(|(r, e)| format!("{r}: {e}"))
        .collect();
    format!(
        "the source has not completed a list within {}s of start{}",
        deadline.as_secs(),
        if failing.is_empty() {
            String::new()
        } else {
            format!(" ({})", failing.join("; "))
        }
    )
}
