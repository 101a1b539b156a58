//! One error type for the IPVS client. Every kernel refusal names the
//! operation and the object ("add service TCP 10.0.0.1:80") and keeps the
//! errno, so callers decide on idempotence from the variant, never from text.

use std::io;

use super::types::InvalidValue;
use crate::kernel::netlink::DecodeError;

#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The generic netlink controller does not know the family "IPVS".
    #[error(
        "IPVS is not available in this kernel (generic netlink family \"IPVS\" not found): \
         load the ip_vs module (modprobe ip_vs)"
    )]
    NoIpvs,

    /// ESRCH (no such service) or ENOENT (no such destination).
    #[error("{op} {target}: not found")]
    NotFound {
        op: &'static str,
        target: String,
        errno: i32,
    },

    /// EEXIST.
    #[error("{op} {target}: already exists")]
    Exists { op: &'static str, target: String },

    /// EPERM: IPVS commands need CAP_NET_ADMIN in the network namespace.
    #[error("{op} {target}: permission denied (needs CAP_NET_ADMIN)")]
    Permission {
        op: &'static str,
        target: String,
        errno: i32,
    },

    /// ENOENT while adding or editing a service: the kernel found no
    /// scheduler module of that name.
    #[error("{op} {target}: scheduler {scheduler:?} not found (is ip_vs_{scheduler} available?)")]
    NoScheduler {
        op: &'static str,
        target: String,
        scheduler: String,
    },

    /// Any other errno, with the kernel's extended-ack message if it gave one.
    #[error("{op} {target}: {source}{}", extack_suffix(.extack))]
    Kernel {
        op: &'static str,
        target: String,
        extack: Option<String>,
        #[source]
        source: io::Error,
    },

    /// Refused before anything was sent.
    #[error("{op} {target}: {source}")]
    Invalid {
        op: &'static str,
        target: String,
        #[source]
        source: InvalidValue,
    },

    /// The socket itself failed (open, send, receive, timeout).
    #[error("{op}: netlink socket: {source}")]
    Socket {
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// The kernel's reply did not parse.
    #[error("{op}: malformed reply: {source}")]
    Decode {
        op: &'static str,
        #[source]
        source: DecodeError,
    },
}

fn extack_suffix(extack: &Option<String>) -> String {
    extack
        .as_deref()
        .map(|m| format!(" ({m})"))
        .unwrap_or_default()
}

impl IpvsError {
    /// Maps a kernel errno for `op` on `target` to its variant.
    /// `scheduler` is the scheduler of an add/edit service request.
    pub(crate) fn from_errno(
        op: &'static str,
        target: String,
        errno: i32,
        extack: Option<String>,
        scheduler: Option<&str>,
    ) -> Self {
        match (errno, scheduler) {
            (libc::ENOENT, Some(s)) => IpvsError::NoScheduler {
                op,
                target,
                scheduler: s.to_owned(),
            },
            (libc::ESRCH | libc::ENOENT, _) => IpvsError::NotFound { op, target, errno },
            (libc::EEXIST, _) => IpvsError::Exists { op, target },
            (libc::EPERM | libc::EACCES, _) => IpvsError::Permission { op, target, errno },
            _ => IpvsError::Kernel {
                op,
                target,
                extack,
                source: io::Error::from_raw_os_error(errno),
            },
        }
    }

    /// The errno behind this error, if the kernel or a syscall gave one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            IpvsError::NotFound { errno, .. } | IpvsError::Permission { errno, .. } => Some(*errno),
            IpvsError::Exists { .. } => Some(libc::EEXIST),
            IpvsError::NoScheduler { .. } => Some(libc::ENOENT),
            IpvsError::Kernel { source, .. } | IpvsError::Socket { source, .. } => {
                source.raw_os_error()
            }
            IpvsError::NoIpvs | IpvsError::Invalid { .. } | IpvsError::Decode { .. } => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, IpvsError::NotFound { .. })
    }

    pub fn is_exists(&self) -> bool {
        matches!(self, IpvsError::Exists { .. })
    }

    /// A short, fixed label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            IpvsError::NoIpvs => "no_ipvs",
            IpvsError::NotFound { .. } => "not_found",
            IpvsError::Exists { .. } => "exists",
            IpvsError::Permission { .. } => "permission",
            IpvsError::NoScheduler { .. } => "no_scheduler",
            IpvsError::Kernel { .. } => "kernel",
            IpvsError::Invalid { .. } => "invalid",
            IpvsError::Socket { .. } => "socket",
            IpvsError::Decode { .. } => "decode",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        let t = || "TCP 10.0.0.1:80".to_owned();
        let e = IpvsError::from_errno("delete service", t(), libc::ESRCH, None, None);
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "delete service TCP 10.0.0.1:80: not found");
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));

        let e = IpvsError::from_errno("add service", t(), libc::EEXIST, None, Some("rr"));
        assert!(e.is_exists());
        assert_eq!(e.to_string(), "add service TCP 10.0.0.1:80: already exists");

        let e = IpvsError::from_errno("add service", t(), libc::ENOENT, None, Some("nope"));
        assert!(matches!(e, IpvsError::NoScheduler { ref scheduler, .. } if scheduler == "nope"));

        let e = IpvsError::from_errno("add service", t(), libc::EPERM, None, None);
        assert_eq!(e.metric_label(), "permission");

        let e = IpvsError::from_errno("add service", t(), libc::EINVAL, Some("bad".into()), None);
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        assert!(e.to_string().ends_with("(bad)"), "{e}");
    }

    #[test]
    fn no_ipvs_says_what_to_do() {
        assert!(IpvsError::NoIpvs
            .to_string()
            .contains("load the ip_vs module"));
    }
}
