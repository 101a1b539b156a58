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
    TcHook,
    TcMarkNative,
    TcMark,
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

    /// `IPWARDEN_BENCH_SPLIT=1`: what tc allow's rules cost UDP, step by
    /// step, and the two nodes beside them (`split.rs`).
    pub const SPLIT: [Config; 8] = [
        Config::None,
        Config::TcOnly,
        Config::TcHook,
        Config::TcMarkNative,
        Config::TcMark,
        Config::TcAllow,
        Config::KubeRouterNode,
        Config::IpwardenNode,
    ];

    /// Every configuration: each has its own receiver addresses and
    /// target Service in the generated cluster.
    pub const EVERY: [Config; 10] = [
        Config::None,
        Config::TcEmpty,
        Config::TcOnly,
        Config::TcAllow,
        Config::Iptables,
        Config::KubeRouterNode,
        Config::IpwardenNode,
        Config::TcHook,
        Config::TcMarkNative,
        Config::TcMark,
    ];

    /// Where `self` is in [`Config::EVERY`]: its receiver's addresses.
    pub fn index(self) -> usize {
        Config::EVERY
            .iter()
            .position(|&c| c == self)
            .expect("config")
    }

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
            Config::TcHook => "tc + an empty filter INPUT chain (netfilter's hook alone)",
            Config::TcMarkNative => "tc + a mark ACCEPT alone in INPUT, without a comment",
            Config::TcMark => "tc + the shipped mark ACCEPT alone in INPUT",
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
            Config::TcHook => "tc-hook",
            Config::TcMarkNative => "tc-mark-native",
            Config::TcMark => "tc-mark",
        }
    }

    pub fn has_program(self) -> bool {
        matches!(
            self,
            Config::TcOnly
                | Config::TcAllow
                | Config::IpwardenNode
                | Config::TcHook
                | Config::TcMarkNative
                | Config::TcMark
        )
    }

    pub fn has_service_rules(self) -> bool {
        matches!(
            self,
            Config::TcAllow | Config::Iptables | Config::KubeRouterNode | Config::IpwardenNode
        )
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

impl Drop for Receiver {
    /// The iperf3 server goes with its receiver, on every way out of the
    /// bench (the split and profile modes return early).
    fn drop(&mut self) {
        // Our own child, by handle; an error means it is already gone.
        let _ = self.iperf.kill();
        let _ = self.iperf.wait();
    }
}
