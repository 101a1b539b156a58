//! Wire numbers of the ipset netlink protocol. Every value here comes from
//! `include/uapi/linux/netfilter/ipset/ip_set.h` (and `ip_set_hash.h` for
//! the hash type errors) unless its comment says otherwise; nothing outside
//! `kernel/ipset/` ever sees one of them.

use neli::neli_enum;

/// `NFNL_SUBSYS_IPSET` (linux/netfilter/nfnetlink.h): the high byte of
/// `nlmsg_type`; the low byte is the command.
pub(super) const NFNL_SUBSYS_IPSET: u8 = 6;
/// `NFNETLINK_V0`, the nfgenmsg version.
pub(super) const NFNETLINK_V0: u8 = 0;
/// `IPSET_PROTOCOL`: the protocol version sent in every request.
pub(super) const IPSET_PROTOCOL: u8 = 7;
/// `IPSET_MAXNAMELEN` counts the trailing NUL.
pub(super) const IPSET_MAXNAMELEN: usize = 32;
/// `IPSET_MAX_COMMENT_SIZE`: the longest comment the kernel stores.
pub(super) const IPSET_MAX_COMMENT_SIZE: usize = 255;

/// `IPSET_ATTR_*` at command level (first enum of ip_set.h).
#[neli_enum(serialized_type = "u16")]
pub enum IpsetAttr {
    Protocol = 1,
    Setname = 2,
    Typename = 3,
    Revision = 4,
    Family = 5,
    Flags = 6,
    Data = 7,
    Adt = 8,
    Lineno = 9,
    /// `IPSET_ATTR_REVISION_MIN` shares the number of PROTOCOL_MIN.
    RevisionMin = 10,
}

impl IpsetAttr {
    /// `IPSET_ATTR_SETNAME2` shares the number of TYPENAME (rename, swap).
    pub const SETNAME2: Self = Self::Typename;
}

/// `IPSET_ATTR_*` inside the DATA nest of a set's header (create, list).
#[neli_enum(serialized_type = "u16")]
pub enum HeaderAttr {
    Timeout = 6,
    CadtFlags = 8,
    Initval = 17,
    Hashsize = 18,
    Maxelem = 19,
    Netmask = 20,
    Bucketsize = 21,
    Elements = 24,
    References = 25,
    Memsize = 26,
}

/// `IPSET_ATTR_*` inside the DATA nest of a member (add, del, list). IP2,
/// BYTES, PACKETS and COMMENT reuse header numbers, hence their own enum.
#[neli_enum(serialized_type = "u16")]
pub enum MemberAttr {
    Ip = 1,
    Cidr = 3,
    Port = 4,
    Timeout = 6,
    Proto = 7,
    CadtFlags = 8,
    /// `IPSET_ATTR_CADT_LINENO` = `IPSET_ATTR_LINENO`.
    Lineno = 9,
    Ip2 = 20,
    Bytes = 24,
    Packets = 25,
    Comment = 26,
}

/// `IPSET_ATTR_IPADDR_IPV4` / `_IPV6`, nested inside IP and IP2.
#[neli_enum(serialized_type = "u16")]
pub enum AddrAttr {
    Ipv4 = 1,
    Ipv6 = 2,
}

/// `enum ipset_cadt_flags` (CADT_FLAGS, upper half of cmdattrs).
pub(super) mod cadt_flag {
    pub(crate) const NOMATCH: u32 = 1 << 2;
    pub(crate) const WITH_COUNTERS: u32 = 1 << 3;
    pub(crate) const WITH_COMMENT: u32 = 1 << 4;
    pub(crate) const WITH_SKBINFO: u32 = 1 << 6;
}

/// `enum ipset_cmd_flags`, sent in `IPSET_ATTR_FLAGS` of a dump request.
pub(super) mod list_flag {
    pub(crate) const SETNAME: u32 = 1 << 1;
    pub(crate) const HEADER: u32 = 1 << 2;
}

/// Defines `errno::NAME` for each number and `errno::TEXT`, every number
/// with its text, from one list.
macro_rules! errnos {
    ($($name:ident = $n:literal: $text:literal,)*) => {
        #[allow(dead_code)] // the whole enum; `classify` names only some
        pub(super) mod errno {
            $(pub(crate) const $name: i32 = $n;)*
            pub(crate) const TEXT: &[(i32, &str)] = &[$(($n, $text)),*];
        }
    };
}

// Kernel errnos of the ipset space (`enum ipset_errno`, then the hash type
// codes of ip_set_hash.h, which start at `IPSET_ERR_TYPE_SPECIFIC`).
errnos! {
    PROTOCOL = 4097: "protocol error (malformed request)",
    FIND_TYPE = 4098: "set type not found",
    MAX_SETS = 4099: "too many sets",
    BUSY = 4100: "set busy",
    EXIST_SETNAME2 = 4101: "second set name exists or is missing",
    TYPE_MISMATCH = 4102: "set types or families differ",
    EXIST = 4103: "element exists or is missing",
    INVALID_CIDR = 4104: "invalid CIDR",
    INVALID_NETMASK = 4105: "invalid netmask",
    INVALID_FAMILY = 4106: "invalid family",
    TIMEOUT = 4107: "no timeout support",
    REFERENCED = 4108: "set referenced",
    IPADDR_IPV4 = 4109: "IPv4 address expected",
    IPADDR_IPV6 = 4110: "IPv6 address expected",
    COUNTER = 4111: "no counter support",
    COMMENT = 4112: "no comment support",
    SKBINFO = 4114: "no skbinfo support",
    HASH_FULL = 4352: "hash is full",
    HASH_ELEM = 4353: "null-valued element",
    INVALID_PROTO = 4354: "invalid protocol",
    MISSING_PROTO = 4355: "protocol missing",
}

/// IP protocol numbers with special meaning for ipset ports.
pub(super) const IPPROTO_ICMP: u8 = 1;
pub(super) const IPPROTO_TCP: u8 = 6;
pub(super) const IPPROTO_UDP: u8 = 17;
pub(super) const IPPROTO_ICMPV6: u8 = 58;
pub(super) const IPPROTO_SCTP: u8 = 132;
pub(super) const IPPROTO_UDPLITE: u8 = 136;
