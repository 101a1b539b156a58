//! The flags of what the service proxy sets on the node's IPVS besides
//! its services: sysctls, the rate estimator, connection timeouts
//! (kube-router's names, kube-proxy's as aliases).

use std::path::PathBuf;

use crate::{kernel::ipvs::Timeouts, reconcile::IpvsSettings};

use super::duration;

#[derive(clap::Args, Debug)]
pub struct IpvsArgs {
    /// Where the service proxy writes its IPVS sysctls. A container that is
    /// not privileged has /proc/sys read-only: mount the host's
    /// /proc/sys/net at /host/proc/sys/net and pass /host/proc/sys.
    #[arg(long, env = "IPWARDEN_SYSCTL_DIR", default_value = crate::kernel::sysctl::DEFAULT_DIR)]
    pub sysctl_dir: PathBuf,
    /// The kernel's IPVS rate estimator (net.ipv4.vs.run_estimation):
    /// `=false` turns it off, `=true` on; not given, the node's setting is
    /// left as it is. Up to Linux 6.1 it walks every service's and
    /// destination's counters in one timer every 2 s, under the lock a
    /// service change takes: at 50,000 Services a pause of hundreds of ms
    /// that a Service change can wait behind. Off, `ipvsadm --stats` and
    /// `--rate` stop moving (the agent reads neither).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub ipvs_rate_estimation: Option<bool>,
    /// IPVS's idle timeout of established TCP connections (`ipvsadm --set`,
    /// kube-router's flag; kube-proxy's --ipvs-tcp-timeout), in whole
    /// seconds: `900s`, `2h`. 0 leaves the node's value. Like the other two,
    /// set once at start and not re-applied by the syncs (as kube-router
    /// and kube-proxy do): an `ipvsadm --set` afterwards holds until the
    /// next start. The kernel refuses more than INT_MAX/HZ seconds (24 days
    /// at HZ=1000): the start stops with its error.
    #[arg(long, alias = "ipvs-tcp-timeout", default_value = "0s", value_parser = parse_timeout)]
    pub service_tcp_timeout: u32,
    /// IPVS's timeout of TCP connections after a FIN (kube-router's flag;
    /// kube-proxy's --ipvs-tcpfin-timeout), whole seconds; 0 leaves it.
    #[arg(long, alias = "ipvs-tcpfin-timeout", default_value = "0s", value_parser = parse_timeout)]
    pub service_tcpfin_timeout: u32,
    /// IPVS's idle timeout of UDP "connections" (kube-router's flag;
    /// kube-proxy's --ipvs-udp-timeout), whole seconds; 0 leaves it.
    #[arg(long, alias = "ipvs-udp-timeout", default_value = "0s", value_parser = parse_timeout)]
    pub service_udp_timeout: u32,
}

impl IpvsArgs {
    pub fn settings(&self) -> IpvsSettings {
        IpvsSettings {
            sysctl_dir: self.sysctl_dir.clone(),
            rate_estimation: self.ipvs_rate_estimation,
            timeouts: Timeouts {
                tcp: self.service_tcp_timeout,
                tcp_fin: self.service_tcpfin_timeout,
                udp: self.service_udp_timeout,
            },
        }
    }
}

/// A duration IPVS can hold: whole seconds, within its u32.
fn parse_timeout(s: &str) -> Result<u32, String> {
    let d = duration::parse(s)?;
    if d.subsec_nanos() != 0 {
        return Err("IPVS timeouts are whole seconds".into());
    }
    u32::try_from(d.as_secs())
        .map_err(|_| format!("{} s is more than IPVS holds ({} s)", d.as_secs(), u32::MAX))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        ipvs: IpvsArgs,
    }

    fn timeouts(args: &[&str]) -> Result<Timeouts, String> {
        let cli = Cli::try_parse_from(std::iter::once("ipwarden").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Ok(cli.ipvs.settings().timeouts)
    }

    #[test]
    fn durations_are_read_as_kube_router_reads_them() {
        let t = |tcp, tcp_fin, udp| Timeouts { tcp, tcp_fin, udp };
        assert_eq!(timeouts(&[]), Ok(t(0, 0, 0)), "none given: all kept");
        assert_eq!(
            timeouts(&["--service-tcp-timeout=900s", "--service-udp-timeout=30s"]),
            Ok(t(900, 0, 30))
        );
        assert_eq!(
            timeouts(&[
                "--service-tcp-timeout=2h",
                "--service-tcpfin-timeout=1m30s",
                "--service-udp-timeout=0"
            ]),
            Ok(t(7200, 90, 0))
        );
        assert_eq!(
            timeouts(&["--service-tcpfin-timeout", "2000ms"]),
            Ok(t(0, 2, 0))
        );
        assert_eq!(
            timeouts(&["--service-tcp-timeout=4294967295s"]),
            Ok(t(u32::MAX, 0, 0))
        );
    }

    #[test]
    fn kube_proxy_names_are_aliases() {
        assert_eq!(
            timeouts(&[
                "--ipvs-tcp-timeout=15m",
                "--ipvs-tcpfin-timeout=10s",
                "--ipvs-udp-timeout=5s"
            ]),
            Ok(Timeouts {
                tcp: 900,
                tcp_fin: 10,
                udp: 5
            })
        );
    }

    #[test]
    fn a_value_ipvs_cannot_hold_is_refused_naming_the_flag() {
        let refused = |args: &[&str], flag: &str, why: &str| {
            let e = timeouts(args).unwrap_err();
            assert!(e.contains(flag) && e.contains(why), "{args:?}: {e}");
        };
        refused(
            &["--service-tcp-timeout=1.5s"],
            "--service-tcp-timeout",
            "whole seconds",
        );
        refused(
            &["--service-udp-timeout=300ms"],
            "--service-udp-timeout",
            "whole seconds",
        );
        refused(
            &["--ipvs-tcpfin-timeout=4294967296s"],
            "--service-tcpfin-timeout",
            "more than IPVS holds (4294967295 s)",
        );
        refused(
            &["--service-tcp-timeout=200000000000000000000h"],
            "--service-tcp-timeout",
            "too large",
        );
        refused(
            &["--service-udp-timeout=-5s"],
            "--service-udp-timeout",
            "expected a number",
        );
        refused(
            &["--service-tcp-timeout=5d"],
            "--service-tcp-timeout",
            "unknown unit",
        );
    }
}
