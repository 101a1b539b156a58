//! The node-wide IPVS settings the service proxy writes when it connects:
//! the sysctls, the rate estimator's switch and the connection timeouts
//! (kube-router's --service-*-timeout). Once, at start, as kube-router and
//! kube-proxy set their timeouts: a full sync does not look at them again,
//! so an `ipvsadm --set` after the start holds until the next start.

use std::path::PathBuf;

use crate::kernel::{
    ipvs::{IpvsClient, IpvsError, Request, Timeouts},
    sysctl,
};

use super::ReconcileError;

/// What the service proxy sets on the node's IPVS besides its services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsSettings {
    /// Where the IPVS sysctls are written (`sysctl::DEFAULT_DIR`).
    pub sysctl_dir: PathBuf,
    /// IPVS's rate estimator on or off (`sysctl::RUN_ESTIMATION`); None:
    /// as the node has it.
    pub rate_estimation: Option<bool>,
    /// Connection timeouts in seconds; a 0 leaves that one as the node has
    /// it, all 0 sends nothing.
    pub timeouts: Timeouts,
}

impl IpvsSettings {
    /// The sysctls under `sysctl_dir`, nothing else of the node's changed.
    pub fn sysctls_only(sysctl_dir: impl Into<PathBuf>) -> Self {
        Self {
            sysctl_dir: sysctl_dir.into(),
            rate_estimation: None,
            timeouts: Timeouts::default(),
        }
    }

    /// Writes what differs from the node's; each change is logged.
    pub(super) fn apply(&self, ipvs: &mut IpvsClient) -> Result<(), ReconcileError> {
        for path in sysctl::ensure_ipvs(&self.sysctl_dir, self.rate_estimation)? {
            tracing::info!(sysctl = path, "set");
        }
        self.apply_timeouts(ipvs)
            .map_err(|refusal| ReconcileError::Timeouts {
                flags: flags_of(self.timeouts),
                // ip_vs_set_timeout: more than INT_MAX / HZ seconds is EINVAL.
                hint: match refusal.errno {
                    Some(libc::EINVAL) => " (the kernel takes at most INT_MAX/HZ seconds each)",
                    _ => "",
                },
                refusal: Box::new(refusal),
            })
    }

    fn apply_timeouts(&self, ipvs: &mut IpvsClient) -> Result<(), IpvsError> {
        if self.timeouts == Timeouts::default() {
            return Ok(());
        }
        let before = ipvs.timeouts()?;
        let after = written_over(before, self.timeouts);
        if after == before {
            tracing::info!(timeouts = %shown(before), "IPVS timeouts already as given");
            return Ok(());
        }
        ipvs.execute(&Request::SetTimeouts(self.timeouts))?;
        tracing::info!(
            timeouts = %shown(after),
            before = %shown(before),
            "IPVS timeouts set"
        );
        Ok(())
    }
}

/// The timeouts the kernel holds after `given` is written over `before`:
/// a 0 keeps the value before (`ip_vs_set_timeout`).
fn written_over(before: Timeouts, given: Timeouts) -> Timeouts {
    let pick = |given: u32, before: u32| if given == 0 { before } else { given };
    Timeouts {
        tcp: pick(given.tcp, before.tcp),
        tcp_fin: pick(given.tcp_fin, before.tcp_fin),
        udp: pick(given.udp, before.udp),
    }
}

/// The flags that gave `t`'s non-zero timeouts, as a user typed them.
fn flags_of(t: Timeouts) -> String {
    let given = [
        ("--service-tcp-timeout", t.tcp),
        ("--service-tcpfin-timeout", t.tcp_fin),
        ("--service-udp-timeout", t.udp),
    ];
    let given = given.iter().filter(|(_, secs)| *secs != 0);
    let flags: Vec<String> = given
        .map(|(flag, secs)| format!("{flag}={secs}s"))
        .collect();
    flags.join(" ")
}

/// In `ipvsadm --set`'s order, with their names and unit.
fn shown(t: Timeouts) -> String {
    format!("tcp {}s tcpfin {}s udp {}s", t.tcp, t.tcp_fin, t.udp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_keeps_the_value_before() {
        let before = Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        };
        let given = Timeouts {
            tcp: 7200,
            tcp_fin: 0,
            udp: 30,
        };
        let after = Timeouts {
            tcp: 7200,
            tcp_fin: 120,
            udp: 30,
        };
        assert_eq!(written_over(before, given), after);
        assert_eq!(written_over(before, Timeouts::default()), before);
        assert_eq!(
            flags_of(given),
            "--service-tcp-timeout=7200s --service-udp-timeout=30s"
        );
    }
}
