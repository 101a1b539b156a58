//! The configurations compared, and a receiver namespace of each.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    process::Child,
};

use ipwarden::{controllers::services::BpfRules, netns::NetNs};
use ipwarden_common::{names::DEFAULT_MARK, Mode};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Config {
    None,
    TcEmpty,
    TcOnly,
    TcAllow,
    Iptables,
    KubeRouterNode,
    IpwardenNode,
}

impl Config {
    pub const ALL: [Config; 7] = [
        Config::None,
        Config::TcEmpty,
        Config::TcOnly,
        Config::TcAllow,
        Config::Iptables,
        Config::KubeRouterNode,
        Config::IpwardenNode,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Config::None => "none (no program, no rules)",
            Config::TcEmpty => "an empty tc program (returns at once), no rules",
            Config::TcOnly => "tc only: the program alone (10k mirror entries, no rules)",
            Config::TcAllow => {
                "tc allow: the program + the shipped rules (mark ACCEPT first in INPUT)"
            }
            Config::Iptables => "iptables + ipset service firewall, 10k members, no program",
            Config::KubeRouterNode => {
                "kube-router node: policy chains (100 local pods, a jump per pod) + service firewall"
            }
            Config::IpwardenNode => {
                "ipwarden node, allow mode: its policy chains (same pods) + shipped rules + program"
            }
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Config::None => "none",
            Config::TcEmpty => "tc-empty",
            Config::TcOnly => "tc-only",
            Config::TcAllow => "tc-allow",
            Config::Iptables => "iptables",
            Config::KubeRouterNode => "kube-router-node",
            Config::IpwardenNode => "ipwarden-node",
        }
    }

    pub fn has_program(self) -> bool {
        matches!(
            self,
            Config::TcOnly | Config::TcAllow | Config::IpwardenNode
        )
    }

    pub fn has_service_rules(self) -> bool {
        !matches!(self, Config::None | Config::TcEmpty | Config::TcOnly)
    }

    pub fn has_policies(self) -> bool {
        matches!(self, Config::KubeRouterNode | Config::IpwardenNode)
    }

    /// The rules of allow mode (the mark ACCEPT) go with the program.
    pub fn bpf_rules(self) -> Option<BpfRules> {
        self.has_program().then_some(BpfRules {
            mode: Mode::Allow,
            mark: DEFAULT_MARK,
        })
    }
}

/// One receiver namespace and its addresses.
pub struct Receiver {
    pub config: Config,
    pub ns: NetNs,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub iperf: Child,
}
