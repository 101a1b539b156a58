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

/// `enum ipset_cmd`: the low byte of `nlmsg_type`. Commands we never send
/// (SAVE, TEST, GET_BYNAME, ...) decode as `UnrecognizedConst`.
#[neli_enum(serialized_type = "u8")]
pub enum IpsetCmd {
    Create = 2,
    Destroy = 3,
    Flush = 4,
    Rename = 5,
    Swap = 6,
    List = 7,
    Add = 9,
    Del = 10,
    Header = 12,
    Type = 13,
}

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

/// Kernel errnos of the ipset space (`enum ipset_errno`, then the hash type
/// codes of ip_set_hash.h, which start at `IPSET_ERR_TYPE_SPECIFIC`).
pub(super) mod errno {
    pub(crate) const PROTOCOL: i32 = 4097;
    pub(crate) const FIND_TYPE: i32 = 4098;
    pub(crate) const MAX_SETS: i32 = 4099;
    pub(crate) const BUSY: i32 = 4100;
    pub(crate) const EXIST_SETNAME2: i32 = 4101;
    pub(crate) const TYPE_MISMATCH: i32 = 4102;
    pub(crate) const EXIST: i32 = 4103;
    pub(crate) const INVALID_CIDR: i32 = 4104;
    pub(crate) const INVALID_NETMASK: i32 = 4105;
    pub(crate) const INVALID_FAMILY: i32 = 4106;
    pub(crate) const TIMEOUT: i32 = 4107;
    pub(crate) const REFERENCED: i32 = 4108;
    pub(crate) const IPADDR_IPV4: i32 = 4109;
    pub(crate) const IPADDR_IPV6: i32 = 4110;
    pub(crate) const COUNTER: i32 = 4111;
    pub(crate) const COMMENT: i32 = 4112;
    pub(crate) const SKBINFO: i32 = 4114;
    pub(crate) const HASH_FULL: i32 = 4352;
    pub(crate) const HASH_ELEM: i32 = 4353;
    pub(crate) const INVALID_PROTO: i32 = 4354;
    pub(crate) const MISSING_PROTO: i32 = 4355;
}

/// IP protocol numbers with special meaning for ipset ports.
pub(super) const IPPROTO_ICMP: u8 = 1;
pub(super) const IPPROTO_TCP: u8 = 6;
pub(super) const IPPROTO_UDP: u8 = 17;
pub(super) const IPPROTO_ICMPV6: u8 = 58;
pub(super) const IPPROTO_SCTP: u8 = 132;
pub(super) const IPPROTO_UDPLITE: u8 = 136;
