//! The IPVS error, in the shape of ipset's: the operation, the object
//! ("add service TCP 10.0.0.1:80"), an [`IpvsErrorKind`] and the errno,
//! with one table of messages, so callers decide on idempotence from the
//! kind, never from text.

use std::{error::Error, io};

use super::types::InvalidValue;
use crate::kernel::netlink::{error_kinds, DecodeError, Refusal};

error_kinds! {
    /// What went wrong, each with its metric label and message.
    pub enum IpvsErrorKind {
        /// The generic netlink controller does not know the family "IPVS".
        NoIpvs => (
            "no_ipvs",
            "IPVS is not available in this kernel (generic netlink family \"IPVS\" \
             not found): load the ip_vs module (modprobe ip_vs)"
        ),
        /// ESRCH (no such service) or ENOENT (no such destination).
        NotFound => ("not_found", "not found"),
        Exists => ("exists", "already exists"),
        /// EPERM: IPVS commands need CAP_NET_ADMIN in the network namespace.
        Permission => ("permission", "permission denied (needs CAP_NET_ADMIN)"),
        /// ENOENT while adding or editing a service: the kernel found no
        /// scheduler module of that name.
        NoScheduler => (
            "no_scheduler",
            "scheduler \"{}\" not found (is ip_vs_{} available?)"
        ),
        /// Any other errno, with the kernel's extended-ack message if it gave one.
        Kernel => ("kernel", "{}"),
        /// Refused before anything was sent.
        Invalid => ("invalid", "{}"),
        /// The socket itself failed (open, send, receive, timeout).
        Socket => ("socket", "netlink socket: {}"),
        /// The kernel's reply did not parse.
        Decode => ("decode", "malformed reply: {}"),
    }
}

/// An IPVS operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{}", message(.op, .target, *.kind, .detail))]
pub struct IpvsError {
    pub op: &'static str,
    /// The object, named the way ipvsadm prints it; empty when the socket
    /// or a reply failed.
    pub target: String,
    pub kind: IpvsErrorKind,
    /// The errno behind this error, if the kernel or a syscall gave one.
    pub errno: Option<i32>,
    /// The scheduler, or the cause's text.
    pub detail: Option<String>,
    #[source]
    pub source: Option<Box<dyn Error + Send + Sync>>,
}

fn message(op: &str, target: &str, kind: IpvsErrorKind, detail: &Option<String>) -> String {
    let text = kind.text().1.replace("{}", detail.as_deref().unwrap_or(""));
    match (kind, target) {
        (IpvsErrorKind::NoIpvs, _) => text,
        (_, "") => format!("{op}: {text}"),
        _ => format!("{op} {target}: {text}"),
    }
}

impl IpvsError {
    fn new(op: &'static str, target: String, kind: IpvsErrorKind, errno: Option<i32>) -> Self {
        Self {
            op,
            target,
            kind,
            errno,
            detail: None,
            source: None,
        }
    }

    /// An error of `kind` whose detail is `source`'s text.
    fn caused<E: Error + Send + Sync + 'static>(
        op: &'static str,
        target: String,
        kind: IpvsErrorKind,
        source: E,
    ) -> Self {
        Self {
            detail: Some(source.to_string()),
            source: Some(Box::new(source)),
            ..Self::new(op, target, kind, None)
        }
    }

    pub(crate) fn no_ipvs() -> Self {
        Self::new("resolve", "IPVS".into(), IpvsErrorKind::NoIpvs, None)
    }

    pub(crate) fn invalid(op: &'static str, target: String, source: InvalidValue) -> Self {
        Self::caused(op, target, IpvsErrorKind::Invalid, source)
    }

    pub(crate) fn socket(op: &'static str, source: io::Error) -> Self {
        let errno = source.raw_os_error();
        Self {
            errno,
            ..Self::caused(op, String::new(), IpvsErrorKind::Socket, source)
        }
    }

    pub(crate) fn decode(op: &'static str, source: DecodeError) -> Self {
        Self::caused(op, String::new(), IpvsErrorKind::Decode, source)
    }

    /// Maps a kernel errno for `op` on `target` to its kind.
    /// `scheduler` is the scheduler of an add/edit service request.
    pub(crate) fn from_errno(
        op: &'static str,
        target: String,
        errno: i32,
        extack: Option<String>,
        scheduler: Option<&str>,
    ) -> Self {
        let kind = match (errno, scheduler) {
            (libc::ENOENT, Some(_)) => IpvsErrorKind::NoScheduler,
            (libc::ESRCH | libc::ENOENT, _) => IpvsErrorKind::NotFound,
            (libc::EEXIST, _) => IpvsErrorKind::Exists,
            (libc::EPERM | libc::EACCES, _) => IpvsErrorKind::Permission,
            _ => {
                let refusal = Refusal { errno, extack };
                return Self {
                    errno: Some(errno),
                    ..Self::caused(op, target, IpvsErrorKind::Kernel, refusal)
                };
            }
        };
        Self {
            detail: scheduler.map(str::to_owned),
            ..Self::new(op, target, kind, Some(errno))
        }
    }

    /// The errno behind this error, if the kernel or a syscall gave one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.errno
    }

    pub fn is(&self, kind: IpvsErrorKind) -> bool {
        self.kind == kind
    }

    pub fn is_not_found(&self) -> bool {
        self.is(IpvsErrorKind::NotFound)
    }

    pub fn is_exists(&self) -> bool {
        self.is(IpvsErrorKind::Exists)
    }

    /// A short, fixed label for metrics.
    pub fn metric_label(&self) -> &'static str {
        self.kind.text().0
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
        assert!(e.is(IpvsErrorKind::NoScheduler));
        assert_eq!(
            e.to_string(),
            "add service TCP 10.0.0.1:80: scheduler \"nope\" not found (is ip_vs_nope available?)"
        );

        let e = IpvsError::from_errno("add service", t(), libc::EPERM, None, None);
        assert_eq!(e.metric_label(), "permission");

        let e = IpvsError::from_errno("add service", t(), libc::EINVAL, Some("bad".into()), None);
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        assert!(e.to_string().ends_with("(bad)"), "{e}");
    }

    #[test]
    fn no_ipvs_says_what_to_do() {
        assert!(IpvsError::no_ipvs()
            .to_string()
            .starts_with("IPVS is not available in this kernel"));
    }
}
