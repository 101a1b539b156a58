//! Medians, spreads and the figures kept per configuration.

use super::{iperf::Tcp, tcp_rr, udp::Udp};

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `min-max (x%)`: the range of `v` and its width relative to the median.
pub fn spread(v: Vec<f64>) -> String {
    let lo = v.iter().copied().fold(f64::MAX, f64::min);
    let hi = v.iter().copied().fold(f64::MIN, f64::max);
    let mid = median(v);
    format!("{lo:.2}-{hi:.2} ({:.1}%)", 100.0 * (hi - lo) / mid)
}

/// The median of `v` to a whole number, or nothing when `v` is empty.
pub fn median_text(v: &[f64]) -> String {
    if v.is_empty() {
        return String::new();
    }
    format!("{:.0}", median(v.to_vec()))
}

fn median_opt(v: &[Option<f64>]) -> Option<f64> {
    let v: Vec<f64> = v.iter().flatten().copied().collect();
    (!v.is_empty()).then(|| median(v))
}

pub fn env_num(key: &str, default: f64) -> f64 {
    std::env::var(key)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

pub fn ns(x: Option<f64>) -> String {
    x.map_or("".to_string(), |v| format!("{v:.1}"))
}

/// Per configuration, every run's figures.
#[derive(Default)]
pub struct Samples {
    pub tcp: Vec<Tcp>,
    /// Bytes per packet the accepting rule counted during the stream.
    pub tcp_skb_bytes: Vec<f64>,
    pub rr: Vec<tcp_rr::Rr>,
    /// Statistics off: what the CPU and rate ratios compare.
    pub udp4: Vec<Udp>,
    pub udp6: Vec<Udp>,
    /// Statistics on (configurations with a program): its time per run.
    pub udp4_stats: Vec<Udp>,
    pub udp6_stats: Vec<Udp>,
}

/// Medians of one kind of traffic.
#[derive(Clone, Copy)]
pub struct UdpMedian {
    pub sent_pps: f64,
    pub recv_pps: f64,
    pub cpu_ns: f64,
    pub prog_ns: Option<f64>,
    /// CPU ns per packet in the windows with statistics on.
    pub cpu_ns_stats: Option<f64>,
}

pub fn udp_median(off: &[Udp], on: &[Udp]) -> UdpMedian {
    UdpMedian {
        sent_pps: median(off.iter().map(|u| u.sent_pps).collect()),
        recv_pps: median(off.iter().map(|u| u.recv_pps).collect()),
        cpu_ns: median(off.iter().map(|u| u.cpu_ns_per_packet).collect()),
        prog_ns: median_opt(&on.iter().map(|u| u.prog_ns_per_run).collect::<Vec<_>>()),
        cpu_ns_stats: (!on.is_empty())
            .then(|| median(on.iter().map(|u| u.cpu_ns_per_packet).collect())),
    }
}
