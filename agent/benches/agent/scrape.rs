//! The agent's /metrics, read from inside the node namespace: the series
//! the bench times syncs with.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

/// One scrape: every sample by its series (`name{labels}` as printed).
pub struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    /// GET /metrics from the agent on 127.0.0.1:20244. Call it from a
    /// thread inside the node namespace.
    pub fn take() -> std::io::Result<Scrape> {
        let mut s = TcpStream::connect("127.0.0.1:20244")?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(Scrape::parse(&text))
    }

    fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect();
        Scrape(samples)
    }

    /// The sum of the samples of `name` whose labels include every pair of
    /// `labels` (0 when none).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                let (n, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Successful syncs of `controller` of `kind` (full, partial).
    pub fn syncs(&self, controller: &str, kind: &str) -> f64 {
        self.get(
            "ipwarden_syncs_total",
            &[("controller", controller), ("kind", kind), ("result", "ok")],
        )
    }

    /// Failed syncs of `controller`, every kind.
    pub fn failed_syncs(&self, controller: &str) -> f64 {
        self.get("ipwarden_syncs_total", &[("controller", controller)])
            - self.syncs(controller, "full")
            - self.syncs(controller, "partial")
    }

    /// Sum of the durations of `controller`'s successful syncs of `kind`.
    pub fn sync_seconds(&self, controller: &str, kind: &str) -> f64 {
        self.get(
            "ipwarden_sync_duration_seconds_sum",
            &[("controller", controller), ("kind", kind)],
        )
    }

    /// When `controller` last had work queued: the dispatcher noted the
    /// first change since its last sync (Unix seconds).
    pub fn last_queued(&self, controller: &str) -> f64 {
        self.get(
            "ipwarden_sync_last_queued_timestamp_seconds",
            &[("controller", controller)],
        )
    }

    /// CPU seconds of `controller`'s successful syncs of `kind` (its
    /// worker thread and the children it waited for).
    pub fn sync_cpu(&self, controller: &str, kind: &str) -> f64 {
        self.get(
            "ipwarden_sync_cpu_seconds_total",
            &[("controller", controller), ("kind", kind)],
        )
    }

    /// Seconds spent in each step of `controller`'s successful syncs of
    /// `kind`, by step name (`ipwarden_sync_step_seconds_total`).
    pub fn steps(&self, controller: &str, kind: &str) -> BTreeMap<String, f64> {
        let labels = format!("{{controller=\"{controller}\",kind=\"{kind}\",step=\"");
        let prefix = format!("ipwarden_sync_step_seconds_total{labels}");
        self.0
            .iter()
            .filter_map(|(series, v)| {
                let step = series.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                Some((step.to_string(), *v))
            })
            .collect()
    }

    /// When `controller` last synced successfully (Unix seconds).
    pub fn last_synced(&self, controller: &str) -> f64 {
        self.get(
            "ipwarden_sync_last_timestamp_seconds",
            &[("controller", controller)],
        )
    }
}
