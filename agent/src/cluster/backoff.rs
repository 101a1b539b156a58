//! Retries of a kind's list and watch that back off and stay backed off.
//!
//! kube-runtime's own `default_backoff()` resets on any event, and the
//! watcher emits `Init` at every relist attempt: against an unreachable
//! API server it retried about once a second, per kind, on every node.
//! Here the delay grows exponentially with jitter (0.8 s, doubling, each
//! delay taken at random between one and two times its base, the base
//! capped at 15 s so no delay exceeds 30 s) and resets only once a list
//! completed (`InitDone`) or the watch delivered a change. A watch that
//! expired (410 Gone) is no failure: the server answered, and the relist
//! starts at once.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};

/// The first delay after a failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(800);
/// The longest base delay; jitter at most doubles it (30 s).
pub const MAX_BASE_DELAY: Duration = Duration::from_secs(15);

fn delays() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(FIRST_DELAY)
        .with_max_delay(MAX_BASE_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

struct State<S> {
    inner: std::pin::Pin<Box<S>>,
    /// Set while failing: the delays to come.
    delays: Option<ExponentialBackoff>,
    /// The wait before the inner stream is polled again.
    wait: Option<Duration>,
}

/// kube-runtime's `watcher` with its retries backed off (see the module's
/// comment).
pub fn backed_off<S, K>(watcher: S) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    backed_off_with(
        watcher,
        |e| matches!(e, watcher::Error::WatchError(status) if status.code == 410),
    )
}

/// `stream` with its errors backed off, except those `expired` accepts.
fn backed_off_with<S, K, E>(
    stream: S,
    expired: fn(&E) -> bool,
) -> impl Stream<Item = Result<Event<K>, E>> + Send
where
    S: Stream<Item = Result<Event<K>, E>> + Send + 'static,
    K: Send + 'static,
    E: Send + 'static,
{
    let state = State {
        inner: Box::pin(stream),
        delays: None,
        wait: None,
    };
    futures::stream::unfold(state, move |mut s| async move {
        if let Some(wait) = s.wait.take() {
            tokio::time::sleep(wait).await;
        }
        let item = s.inner.next().await?;
        match &item {
            Err(e) if expired(e) => s.delays = None,
            Err(_) => {
                let next = s.delays.get_or_insert_with(delays).next();
                s.wait = Some(next.unwrap_or(MAX_BASE_DELAY * 2));
            }
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => s.delays = None,
            Ok(Event::Init | Event::InitApply(_)) => {}
        }
        Some((item, s))
    })
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    /// A watcher against a server that is down: `Init`, error, `Init`,
    /// error... The waits between errors grow (virtual time, paused).
    #[tokio::test(start_paused = true)]
    async fn delays_grow_across_relist_attempts_and_reset_after_a_list() {
        let failing = (0..8).flat_map(|_| [Ok(Event::<u8>::Init), Err("connection refused")]);
        let then_ok = [
            Ok(Event::Init),
            Ok(Event::InitDone),
            Err("dropped"),
            Ok(Event::Init),
        ];
        let mut stream = std::pin::pin!(backed_off_with(
            futures::stream::iter(failing.chain(then_ok)),
            |e| *e == "expired"
        ));
        let mut errors_at = Vec::new();
        let mut last_at = Duration::ZERO;
        let start = Instant::now();
        while let Some(item) = stream.next().await {
            last_at = start.elapsed();
            if item.is_err() {
                errors_at.push(last_at);
            }
        }
        assert_eq!(errors_at.len(), 9);
        let gaps: Vec<Duration> = errors_at.windows(2).map(|w| w[1] - w[0]).collect();
        for (i, g) in gaps.iter().enumerate() {
            let base = (FIRST_DELAY * 2u32.pow(i as u32)).min(MAX_BASE_DELAY);
            assert!(*g >= base && *g < base * 2, "gap {i}: {g:?}, base {base:?}");
        }
        // The list completed in between: the next failure waits the first
        // delay again.
        let after_reset = last_at - errors_at[8];
        assert!(
            after_reset >= FIRST_DELAY && after_reset < FIRST_DELAY * 2,
            "{after_reset:?}"
        );
    }

    /// A watch that expired (410) is followed by the relist at once, and
    /// forgets the delays of earlier failures.
    #[tokio::test(start_paused = true)]
    async fn an_expired_watch_relists_at_once() {
        let items = [
            Err("down"),
            Err("down"),
            Err("down"),
            Err("expired"),
            Ok(Event::<u8>::Init),
            Err("down"),
            Ok(Event::Init),
        ];
        let mut stream =
            std::pin::pin!(backed_off_with(futures::stream::iter(items), |e| *e == "expired"));
        let start = Instant::now();
        let mut at = Vec::new();
        while stream.next().await.is_some() {
            at.push(start.elapsed());
        }
        assert_eq!(at[4], at[3], "no wait after the 410");
        let after = at[6] - at[5];
        assert!(after >= FIRST_DELAY && after < FIRST_DELAY * 2, "{after:?}");
    }
}
