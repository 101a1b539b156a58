//! Typed ipset errors. Every variant names the operation and the set, and
//! keeps the kernel's errno, so `store/` decides what is idempotent from
//! the variant, never from text.

use std::{fmt, io};

use super::{consts::errno, member::Element};
use crate::desired::SetType;
use crate::kernel::netlink::DecodeError;

/// The operation that failed (`ipset` sub-command names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Connect,
    Create,
    Destroy,
    Flush,
    Rename,
    Swap,
    Add,
    Del,
    List,
    Header,
    Type,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Connect => "connect",
            Op::Create => "create",
            Op::Destroy => "destroy",
            Op::Flush => "flush",
            Op::Rename => "rename",
            Op::Swap => "swap",
            Op::Add => "add",
            Op::Del => "del",
            Op::List => "list",
            Op::Header => "header",
            Op::Type => "type",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpsetError {
    #[error("ipset {op} {set}: no such set")]
    SetMissing { op: Op, set: String, errno: i32 },

    #[error("ipset {op} {set}: a set with this name already exists")]
    SetExists { op: Op, set: String, errno: i32 },

    #[error("ipset {op} {set}: the kernel does not support set type {set_type}")]
    UnknownType {
        op: Op,
        set: String,
        set_type: String,
        errno: i32,
    },

    /// A member or a swap partner of another type or family. `errno` is
    /// None when ipwarden caught it before sending.
    #[error("ipset {op} {set}: wrong type or family: {detail}")]
    WrongType {
        op: Op,
        set: String,
        detail: String,
        errno: Option<i32>,
    },

    #[error("ipset {op} {set}: set is full (maxelem reached)")]
    SetFull {
        op: Op,
        set: String,
        member: Option<Box<Element>>,
        errno: i32,
    },

    /// Referenced by an iptables rule or a list:set, or being dumped.
    #[error("ipset {op} {set}: set is in use by a kernel component")]
    InUse { op: Op, set: String, errno: i32 },

    #[error("ipset {op} {set}: member {} is already in the set", show(.member))]
    MemberExists {
        op: Op,
        set: String,
        member: Option<Box<Element>>,
        errno: i32,
    },

    #[error("ipset {op} {set}: member {} is not in the set", show(.member))]
    MemberMissing {
        op: Op,
        set: String,
        member: Option<Box<Element>>,
        errno: i32,
    },

    /// A member timeout, comment or counters for a set created without.
    #[error("ipset {op} {set}: the set was created without {extension} support")]
    NoExtension {
        op: Op,
        set: String,
        extension: &'static str,
        errno: i32,
    },

    #[error("ipset {op} {set}: permission denied (CAP_NET_ADMIN needed)")]
    Permission { op: Op, set: String, errno: i32 },

    /// Any other kernel errno, with the kernel's extended-ack text if any.
    #[error("ipset {op} {set}: kernel error {errno} ({message})")]
    Kernel {
        op: Op,
        set: String,
        errno: i32,
        message: String,
    },

    #[error("ipset {op} {set}: netlink socket")]
    Io {
        op: Op,
        set: String,
        #[source]
        source: io::Error,
    },

    #[error("ipset {op} {set}: malformed kernel reply")]
    Decode {
        op: Op,
        set: String,
        #[source]
        source: DecodeError,
    },
}

fn show(member: &Option<Box<Element>>) -> String {
    member
        .as_ref()
        .map_or_else(|| "(unknown)".to_owned(), |m| m.entry.to_string())
}

impl IpsetError {
    /// The kernel's errno (positive), when the kernel said no.
    pub fn errno(&self) -> Option<i32> {
        match self {
            IpsetError::SetMissing { errno, .. }
            | IpsetError::SetExists { errno, .. }
            | IpsetError::UnknownType { errno, .. }
            | IpsetError::SetFull { errno, .. }
            | IpsetError::InUse { errno, .. }
            | IpsetError::MemberExists { errno, .. }
            | IpsetError::MemberMissing { errno, .. }
            | IpsetError::NoExtension { errno, .. }
            | IpsetError::Permission { errno, .. }
            | IpsetError::Kernel { errno, .. } => Some(*errno),
            IpsetError::WrongType { errno, .. } => *errno,
            IpsetError::Io { source, .. } => source.raw_os_error(),
            IpsetError::Decode { .. } => None,
        }
    }

    /// The set the error is about (the second set for some rename/swap
    /// errors).
    pub fn set(&self) -> &str {
        match self {
            IpsetError::SetMissing { set, .. }
            | IpsetError::SetExists { set, .. }
            | IpsetError::UnknownType { set, .. }
            | IpsetError::WrongType { set, .. }
            | IpsetError::SetFull { set, .. }
            | IpsetError::InUse { set, .. }
            | IpsetError::MemberExists { set, .. }
            | IpsetError::MemberMissing { set, .. }
            | IpsetError::NoExtension { set, .. }
            | IpsetError::Permission { set, .. }
            | IpsetError::Kernel { set, .. }
            | IpsetError::Io { set, .. }
            | IpsetError::Decode { set, .. } => set,
        }
    }

    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            IpsetError::SetMissing { .. } => "set_missing",
            IpsetError::SetExists { .. } => "set_exists",
            IpsetError::UnknownType { .. } => "unknown_type",
            IpsetError::WrongType { .. } => "wrong_type",
            IpsetError::SetFull { .. } => "set_full",
            IpsetError::InUse { .. } => "in_use",
            IpsetError::MemberExists { .. } => "member_exists",
            IpsetError::MemberMissing { .. } => "member_missing",
            IpsetError::NoExtension { .. } => "no_extension",
            IpsetError::Permission { .. } => "permission",
            IpsetError::Kernel { .. } => "kernel",
            IpsetError::Io { .. } => "io",
            IpsetError::Decode { .. } => "decode",
        }
    }
}

/// What the kernel said, before it is given a variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelRefusal {
    /// Positive errno.
    pub errno: i32,
    /// The member the kernel pointed at (ADT line number), if any.
    pub member: Option<Box<Element>>,
    pub extack: Option<String>,
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

/// Gives a kernel errno its variant.
pub(crate) fn classify(t: Target<'_>, r: KernelRefusal) -> IpsetError {
    let op = t.op;
    let set_owned = t.set.to_owned();
    let other = t.set2.unwrap_or(t.set).to_owned();
    let e = r.errno;
    match e {
        libc::ENOENT => IpsetError::SetMissing {
            op,
            set: set_owned,
            errno: e,
        },
        libc::EEXIST => IpsetError::SetExists {
            op,
            set: set_owned,
            errno: e,
        },
        libc::EPERM | libc::EACCES => IpsetError::Permission {
            op,
            set: set_owned,
            errno: e,
        },
        libc::EBUSY | errno::BUSY | errno::REFERENCED => IpsetError::InUse {
            op,
            set: set_owned,
            errno: e,
        },
        errno::FIND_TYPE => IpsetError::UnknownType {
            op,
            set: set_owned,
            set_type: t
                .set_type
                .map_or_else(|| "(unknown)".into(), |t| t.to_string()),
            errno: e,
        },
        // Rename: the new name is taken. Swap: the second set is missing.
        errno::EXIST_SETNAME2 if op == Op::Rename => IpsetError::SetExists {
            op,
            set: other,
            errno: e,
        },
        errno::EXIST_SETNAME2 => IpsetError::SetMissing {
            op,
            set: other,
            errno: e,
        },
        errno::EXIST if op == Op::Del => IpsetError::MemberMissing {
            op,
            set: set_owned,
            member: r.member,
            errno: e,
        },
        errno::EXIST => IpsetError::MemberExists {
            op,
            set: set_owned,
            member: r.member,
            errno: e,
        },
        errno::HASH_FULL => IpsetError::SetFull {
            op,
            set: set_owned,
            member: r.member,
            errno: e,
        },
        errno::TYPE_MISMATCH
        | errno::INVALID_FAMILY
        | errno::IPADDR_IPV4
        | errno::IPADDR_IPV6
        | errno::INVALID_CIDR
        | errno::INVALID_PROTO
        | errno::MISSING_PROTO
        | errno::HASH_ELEM => IpsetError::WrongType {
            op,
            set: set_owned,
            detail: match &r.member {
                Some(m) => format!("{} ({})", errno_text(e), m.entry),
                None => errno_text(e),
            },
            errno: Some(e),
        },
        errno::TIMEOUT | errno::COUNTER | errno::COMMENT | errno::SKBINFO => {
            IpsetError::NoExtension {
                op,
                set: set_owned,
                extension: match e {
                    errno::TIMEOUT => "timeout",
                    errno::COUNTER => "counters",
                    errno::COMMENT => "comment",
                    _ => "skbinfo",
                },
                errno: e,
            }
        }
        _ => IpsetError::Kernel {
            op,
            set: set_owned,
            errno: e,
            message: r.extack.unwrap_or_else(|| errno_text(e)),
        },
    }
}

/// Text for an errno of either space.
pub(crate) fn errno_text(e: i32) -> String {
    let ipset = match e {
        errno::PROTOCOL => "protocol error (malformed request)",
        errno::FIND_TYPE => "set type not found",
        errno::MAX_SETS => "too many sets",
        errno::BUSY => "set busy",
        errno::EXIST_SETNAME2 => "second set name exists or is missing",
        errno::TYPE_MISMATCH => "set types or families differ",
        errno::EXIST => "element exists or is missing",
        errno::INVALID_CIDR => "invalid CIDR",
        errno::INVALID_NETMASK => "invalid netmask",
        errno::INVALID_FAMILY => "invalid family",
        errno::TIMEOUT => "no timeout support",
        errno::REFERENCED => "set referenced",
        errno::IPADDR_IPV4 => "IPv4 address expected",
        errno::IPADDR_IPV6 => "IPv6 address expected",
        errno::HASH_FULL => "hash is full",
        errno::HASH_ELEM => "null-valued element",
        errno::INVALID_PROTO => "invalid protocol",
        errno::MISSING_PROTO => "protocol missing",
        _ => return io::Error::from_raw_os_error(e).to_string(),
    };
    ipset.to_owned()
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

    fn refusal(errno: i32) -> KernelRefusal {
        KernelRefusal {
            errno,
            member: None,
            extack: None,
        }
    }

    #[test]
    fn errnos_get_their_variants_and_keep_the_errno() {
        let e = classify(t(Op::Add, "s", None), refusal(errno::HASH_FULL));
        assert!(matches!(e, IpsetError::SetFull { errno: 4352, .. }));
        assert_eq!(e.errno(), Some(4352));
        assert_eq!(e.set(), "s");
        let e = classify(t(Op::Destroy, "s", None), refusal(errno::BUSY));
        assert!(matches!(e, IpsetError::InUse { .. }));
        let e = classify(
            t(Op::Rename, "a", Some("b")),
            refusal(errno::EXIST_SETNAME2),
        );
        assert!(matches!(e, IpsetError::SetExists { ref set, .. } if set == "b"));
        let e = classify(t(Op::Swap, "a", Some("b")), refusal(errno::EXIST_SETNAME2));
        assert!(matches!(e, IpsetError::SetMissing { ref set, .. } if set == "b"));
        let e = classify(t(Op::Del, "s", None), refusal(errno::EXIST));
        assert!(matches!(e, IpsetError::MemberMissing { .. }));
        let e = classify(t(Op::Add, "s", None), refusal(errno::EXIST));
        assert!(matches!(e, IpsetError::MemberExists { .. }));
        let e = classify(t(Op::Add, "s", None), refusal(libc::EPERM));
        assert!(matches!(e, IpsetError::Permission { errno: 1, .. }));
        let e = classify(t(Op::Swap, "a", Some("b")), refusal(errno::TYPE_MISMATCH));
        assert!(matches!(e, IpsetError::WrongType { .. }));
        let e = classify(t(Op::Add, "s", None), refusal(errno::COMMENT));
        assert_eq!(e.metric_label(), "no_extension");
        let e = classify(t(Op::Create, "s", None), refusal(libc::ENOMEM));
        assert!(matches!(e, IpsetError::Kernel { errno: 12, .. }));
        assert!(e.to_string().contains("ipset create s"));
    }
}
