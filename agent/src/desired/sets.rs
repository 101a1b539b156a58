//! ipsets as values: the set types we speak and one owner's desired set.

use std::{collections::BTreeSet, fmt};

use super::{Family, Member};

/// The set types ipwarden speaks. The kernel's wire numbers and revisions
/// stay in kernel/ipset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetType {
    HashIp,
    HashIpPort,
    HashNet,
    HashNetPort,
    HashIpPortIp,
}

impl SetType {
    pub const ALL: [SetType; 5] = [
        SetType::HashIp,
        SetType::HashIpPort,
        SetType::HashNet,
        SetType::HashNetPort,
        SetType::HashIpPortIp,
    ];

    /// The kernel's type name, as `ipset create` takes it.
    pub fn name(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashNet => "hash:net",
            SetType::HashNetPort => "hash:net,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
        }
    }

    /// Types whose members may carry `nomatch` (IPSET_TYPE_NOMATCH).
    pub fn has_nomatch(self) -> bool {
        matches!(self, SetType::HashNet | SetType::HashNetPort)
    }
}

impl fmt::Display for SetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One desired set: name, type, family and every member. The store
/// creates it with sizes fitted to the members.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SetSpec {
    pub name: String,
    pub set_type: SetType,
    pub family: Family,
    pub members: BTreeSet<Member>,
}
