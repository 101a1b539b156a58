//! Wire constants of the IPVS generic netlink family, from
//! `include/uapi/linux/ip_vs.h`. Commands and attributes are typed neli
//! enums so that no other module spells a number; values the kernel may add
//! later decode as `UnrecognizedConst` instead of failing.

use neli::neli_enum;

/// Name the family registers under (`IPVS_GENL_NAME`).
pub(super) const FAMILY_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`, sent in every generic netlink header.
pub(super) const FAMILY_VERSION: u8 = 1;
/// Version of the generic netlink controller protocol used to resolve
/// the family (the value `genl ctrl` and neli's router send).
pub(super) const CTRL_VERSION: u8 = 2;

/// `IPVS_CMD_*`: the generic netlink `cmd` byte.
#[neli_enum(serialized_type = "u8")]
pub enum IpvsCmd {
    NewService = 1,
    SetService = 2,
    DelService = 3,
    GetService = 4,
    NewDest = 5,
    SetDest = 6,
    DelDest = 7,
    GetDest = 8,
    SetConfig = 12,
    GetConfig = 13,
    GetInfo = 15,
    Flush = 17,
}

/// `IPVS_CMD_ATTR_*`: first-level attributes of every command.
#[neli_enum(serialized_type = "u16")]
pub enum CmdAttr {
    Service = 1,
    Dest = 2,
    TimeoutTcp = 4,
    TimeoutTcpFin = 5,
    TimeoutUdp = 6,
}

/// `IPVS_SVC_ATTR_*`: inside `CmdAttr::Service`.
#[neli_enum(serialized_type = "u16")]
pub enum SvcAttr {
    /// u16, host order: AF_INET or AF_INET6.
    Af = 1,
    /// u16, host order: IPPROTO_*.
    Protocol = 2,
    /// 16 raw bytes (`union nf_inet_addr`), IPv4 in the first 4.
    Addr = 3,
    /// u16, network order.
    Port = 4,
    /// u32, host order.
    Fwmark = 5,
    /// NUL-terminated, at most 15 characters.
    SchedName = 6,
    /// `struct ip_vs_flags { u32 flags; u32 mask; }`, host order.
    Flags = 7,
    /// u32 seconds, host order.
    Timeout = 8,
    /// 4 bytes: IPv4 mask in network order, or IPv6 prefix length as a
    /// host-order u32 (the kernel reads both as a raw `__be32`).
    Netmask = 9,
    /// Nested `IPVS_STATS_ATTR_*` traffic counters (not read), 32-bit.
    Stats = 10,
    /// NUL-terminated persistence engine name.
    PeName = 11,
    /// The same counters, every one 64-bit (not read).
    Stats64 = 12,
}

/// `IPVS_DEST_ATTR_*`: inside `CmdAttr::Dest`.
#[neli_enum(serialized_type = "u16")]
pub enum DestAttr {
    /// 16 raw bytes, IPv4 in the first 4.
    Addr = 1,
    /// u16, network order.
    Port = 2,
    /// u32: `IP_VS_CONN_F_*` forwarding method.
    FwdMethod = 3,
    /// u32 (an `int` in the kernel; negative is refused).
    Weight = 4,
    UThresh = 5,
    LThresh = 6,
    ActiveConns = 7,
    InactConns = 8,
    PersistConns = 9,
    Stats = 10,
    /// u16: AF of the destination (may differ from the service's for tunnels).
    AddrFamily = 11,
    Stats64 = 12,
}

/// `IPVS_INFO_ATTR_*`: first-level attributes of the `GET_INFO` reply (they
/// reuse the numbers of `CmdAttr`, hence their own enum).
#[neli_enum(serialized_type = "u16")]
pub enum InfoAttr {
    Version = 1,
    ConnTabSize = 2,
}

/// `IP_VS_SCHEDNAME_MAXLEN`, including the NUL.
pub(super) const SCHEDNAME_MAXLEN: usize = 16;
