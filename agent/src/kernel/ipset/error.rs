//! The ipset error: the operation, the set, a [`IpsetErrorKind`] and the kernel's
//! errno, with one table of messages.

use std::{fmt, io};

use super::{consts::errno, member::Element};
use crate::desired::SetType;
use crate::kernel::netlink::{error_kinds, Failure, Refusal};

/// The operation that failed (`ipset` sub-command names), numbered as
/// its command (`enum ipset_cmd`, the low byte of `nlmsg_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Opening the socket (`IPSET_CMD_NONE`: nothing is sent).
    Connect = 0,
    Create = 2,
    Destroy = 3,
    Flush = 4,
    Rename = 5,
    Swap = 6,
    List = 7,
    Add = 9,
    Del = 10,
    /// A set's type and family.
    Header = 12,
    /// The revisions of a set type.
    Type = 13,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format!("{self:?}").to_lowercase())
    }
}

error_kinds! {
    /// What went wrong, each with its metric label and message.
    pub enum IpsetErrorKind {
        SetMissing => ("set_missing", "no such set"),
        SetExists => ("set_exists", "a set with this name already exists"),
        UnknownType => ("unknown_type", "the kernel does not support set type {}"),
        /// A member or a swap partner of another type or family.
        WrongType => ("wrong_type", "wrong type or family: {}"),
        SetFull => ("set_full", "set is full (maxelem reached)"),
        /// Referenced by an iptables rule or a list:set, or being dumped.
        InUse => ("in_use", "set is in use by a kernel component"),
        MemberExists => ("member_exists", "member {} is already in the set"),
        MemberMissing => ("member_missing", "member {} is not in the set"),
        /// A member timeout, comment or counters for a set created without.
        NoExtension => ("no_extension", "the set was created without {} support"),
        Permission => ("permission", "permission denied (CAP_NET_ADMIN needed)"),
        /// Any other kernel errno, with the kernel's extended-ack text if any.
        Kernel => ("kernel", "kernel error {}"),
        Io => ("io", "netlink socket"),
        Decode => ("decode", "malformed kernel reply"),
    }
}

/// An ipset operation that failed: which, on which set, why, and the
/// kernel's errno, so `store/` decides what is idempotent from the kind,
/// never from text.
#[derive(Debug, thiserror::Error)]
#[error("ipset {op} {set}: {}", message(*.kind, .detail))]
pub struct IpsetError {
    pub op: Op,
    /// The set the error is about (the second set for some rename/swap
    /// errors).
    pub set: String,
    pub kind: IpsetErrorKind,
    /// The kernel's errno (positive); None when ipwarden caught it before
    /// sending or a reply did not parse.
    pub errno: Option<i32>,
    /// What the message names: a member, a set type, an extension, the
    /// kernel's text.
    pub detail: Option<String>,
    /// The member the kernel pointed at (ADT line number), if any.
    pub member: Option<Box<Element>>,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

fn message(kind: IpsetErrorKind, detail: &Option<String>) -> String {
    kind.text()
        .1
        .replace("{}", detail.as_deref().unwrap_or("(unknown)"))
}

impl IpsetError {
    pub fn new(op: Op, set: impl Into<String>, kind: IpsetErrorKind, errno: Option<i32>) -> Self {
        Self {
            op,
            set: set.into(),
            kind,
            errno,
            detail: None,
            member: None,
            source: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn is(&self, kind: IpsetErrorKind) -> bool {
        self.kind == kind
    }

    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        self.kind.text().0
    }
}

/// What a request was about, to name it in its error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub op: Op,
    pub set: &'a str,
    /// The second set of a rename/swap, which some errnos are about.
    pub set2: Option<&'a str>,
    pub set_type: Option<SetType>,
}

/// Gives a kernel errno its kind.
/// `member` is the one the kernel pointed at (ADT line number), if any.
pub(crate) fn classify(t: Target<'_>, r: Refusal, member: Option<Box<Element>>) -> IpsetError {
    let e = r.errno;
    let entry = member.as_ref().map(|m| m.entry.to_string());
    let (kind, set, detail) = match e {
        libc::ENOENT => (IpsetErrorKind::SetMissing, t.set, None),
        libc::EEXIST => (IpsetErrorKind::SetExists, t.set, None),
        libc::EPERM | libc::EACCES => (IpsetErrorKind::Permission, t.set, None),
        libc::EBUSY | errno::BUSY | errno::REFERENCED => (IpsetErrorKind::InUse, t.set, None),
        errno::FIND_TYPE => (
            IpsetErrorKind::UnknownType,
            t.set,
            t.set_type.map(|t| t.to_string()),
        ),
        // Rename: the new name is taken. Swap: the second set is missing.
        errno::EXIST_SETNAME2 if t.op == Op::Rename => (IpsetErrorKind::SetExists, other(&t), None),
        errno::EXIST_SETNAME2 => (IpsetErrorKind::SetMissing, other(&t), None),
        errno::EXIST if t.op == Op::Del => (IpsetErrorKind::MemberMissing, t.set, entry),
        errno::EXIST => (IpsetErrorKind::MemberExists, t.set, entry),
        errno::HASH_FULL => (IpsetErrorKind::SetFull, t.set, None),
        errno::TYPE_MISMATCH
        | errno::INVALID_FAMILY
        | errno::IPADDR_IPV4
        | errno::IPADDR_IPV6
        | errno::INVALID_CIDR
        | errno::INVALID_PROTO
        | errno::MISSING_PROTO
        | errno::HASH_ELEM => {
            let text = errno_text(e);
            let detail = entry.map_or_else(|| text.clone(), |m| format!("{text} ({m})"));
            (IpsetErrorKind::WrongType, t.set, Some(detail))
        }
        errno::TIMEOUT => (IpsetErrorKind::NoExtension, t.set, Some("timeout".into())),
        errno::COUNTER => (IpsetErrorKind::NoExtension, t.set, Some("counters".into())),
        errno::COMMENT => (IpsetErrorKind::NoExtension, t.set, Some("comment".into())),
        errno::SKBINFO => (IpsetErrorKind::NoExtension, t.set, Some("skbinfo".into())),
        _ => {
            let text = r.extack.unwrap_or_else(|| errno_text(e));
            (IpsetErrorKind::Kernel, t.set, Some(format!("{e} ({text})")))
        }
    };
    IpsetError {
        detail,
        member,
        ..IpsetError::new(t.op, set, kind, Some(e))
    }
}

/// How an exchange about `t` failed, as an ipset error: a refusal
/// classified, a socket or decode error kept as the source.
pub(crate) fn failed(t: Target<'_>, f: Failure) -> IpsetError {
    let (kind, errno, source): (_, _, Box<dyn std::error::Error + Send + Sync>) = match f {
        Failure::Refused(r) => return classify(t, r, None),
        Failure::Io(e) => (IpsetErrorKind::Io, e.raw_os_error(), e.into()),
        Failure::Decode(e) => (IpsetErrorKind::Decode, None, e.into()),
    };
    IpsetError {
        source: Some(source),
        ..IpsetError::new(t.op, t.set, kind, errno)
    }
}

fn other<'a>(t: &Target<'a>) -> &'a str {
    t.set2.unwrap_or(t.set)
}

/// Text for an errno of either space: ipset's own, else strerror.
fn errno_text(e: i32) -> String {
    match errno::TEXT.iter().find(|(n, _)| *n == e) {
        Some((_, text)) => (*text).to_owned(),
        None => io::Error::from_raw_os_error(e).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<'a>(op: Op, set: &'a str, set2: Option<&'a str>) -> Target<'a> {
        Target {
            op,
            set,
            set2,
            set_type: None,
        }
    }

    fn refusal(errno: i32) -> Refusal {
        let extack = None;
        Refusal { errno, extack }
    }

    #[test]
    fn errnos_get_their_variants_and_keep_the_errno() {
        let e = classify(t(Op::Add, "s", None), refusal(errno::HASH_FULL), None);
        assert!(e.is(IpsetErrorKind::SetFull));
        assert_eq!(e.errno, Some(4352));
        assert_eq!(e.set, "s");
        let e = classify(t(Op::Destroy, "s", None), refusal(errno::BUSY), None);
        assert!(e.is(IpsetErrorKind::InUse));
        let e = classify(
            t(Op::Rename, "a", Some("b")),
            refusal(errno::EXIST_SETNAME2),
            None,
        );
        assert!(e.is(IpsetErrorKind::SetExists) && e.set == "b");
        let e = classify(
            t(Op::Swap, "a", Some("b")),
            refusal(errno::EXIST_SETNAME2),
            None,
        );
        assert!(e.is(IpsetErrorKind::SetMissing) && e.set == "b");
        let e = classify(t(Op::Del, "s", None), refusal(errno::EXIST), None);
        assert!(e.is(IpsetErrorKind::MemberMissing));
        let e = classify(t(Op::Add, "s", None), refusal(errno::EXIST), None);
        assert!(e.is(IpsetErrorKind::MemberExists));
        let e = classify(t(Op::Add, "s", None), refusal(libc::EPERM), None);
        assert!(e.is(IpsetErrorKind::Permission) && e.errno == Some(1));
        let e = classify(
            t(Op::Swap, "a", Some("b")),
            refusal(errno::TYPE_MISMATCH),
            None,
        );
        assert!(e.is(IpsetErrorKind::WrongType));
        let e = classify(t(Op::Add, "s", None), refusal(errno::COMMENT), None);
        assert_eq!(e.metric_label(), "no_extension");
        let e = classify(t(Op::Create, "s", None), refusal(libc::ENOMEM), None);
        assert!(e.is(IpsetErrorKind::Kernel) && e.errno == Some(12));
        assert!(
            e.to_string()
                .starts_with("ipset create s: kernel error 12 ("),
            "{e}"
        );
    }
}
