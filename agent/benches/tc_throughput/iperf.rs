//! One iperf3 TCP stream.

use std::{process::Command, time::Duration};

use ipwarden::netns::NetNs;
use serde_json::Value;

use super::{config::Receiver, cpu::cpus, TCP_PORT};

/// One iperf3 TCP measurement: receiver Gbit/s, and Gbit per CPU-second
/// of both iperf3 processes (iperf3's own rusage figures; the receive
/// path runs in their context, see [`Udp`]).
#[derive(Clone, Copy)]
pub struct Tcp {
    pub gbps: f64,
    pub gbps_per_cpu: f64,
}

/// One iperf3 TCP stream from the sender namespace.
pub fn tcp_rate(sender: &NetNs, rx: &Receiver, secs: f64) -> Tcp {
    let mut args = vec![
        "-c".to_string(),
        rx.v4.to_string(),
        "-p".to_string(),
        TCP_PORT.to_string(),
        "-t".to_string(),
        format!("{secs}"),
        "-O".to_string(),
        "0.5".to_string(),
        "-J".to_string(),
    ];
    if cpus() >= 2 {
        args.extend(["-A".to_string(), "0,1".to_string()]);
    }
    let mut last = String::new();
    for _ in 0..20 {
        let out = sender
            .run(|| Command::new("iperf3").args(&args).output())
            .expect("netns")
            .expect("run iperf3 (apt-get install iperf3)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            let v: Value = serde_json::from_str(&text).expect("iperf3 -J output");
            let num = |x: &Value, what: &str| {
                x.as_f64()
                    .unwrap_or_else(|| panic!("iperf3 -J without {what}:\n{text}"))
            };
            let gbps = num(
                &v["end"]["sum_received"]["bits_per_second"],
                "end.sum_received.bits_per_second",
            ) / 1e9;
            let cpu = &v["end"]["cpu_utilization_percent"];
            let cpus = (num(&cpu["host_total"], "host_total")
                + num(&cpu["remote_total"], "remote_total"))
                / 100.0;
            return Tcp {
                gbps,
                gbps_per_cpu: gbps / cpus.max(1e-6),
            };
        }
        // The server may not be listening yet.
        last = text;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("iperf3 to {} kept failing:\n{last}", rx.v4);
}
