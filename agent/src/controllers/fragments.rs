//! The iptables words both controllers use, defined once: which ICMP a
//! firewall chain accepts, how a host address is matched, how a refusal
//! is answered. Built as argument lists, rendered the way iptables-save
//! prints a rule (so an unchanged chain is recognised and not rewritten).

use std::net::IpAddr;

use crate::desired::Family;

/// One rule's arguments after `-A CHAIN`, in iptables-save's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args(Vec<String>);

impl Args {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.0.push(a.into());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.0.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Another fragment appended.
    pub fn then(mut self, other: Args) -> Self {
        self.0.extend(other.0);
        self
    }

    /// As iptables-save prints it: an argument with a space is quoted.
    pub fn render(&self) -> String {
        let words: Vec<String> = self
            .0
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("\"{a}\"")
                } else {
                    a.clone()
                }
            })
            .collect();
        words.join(" ")
    }
}

/// ICMP types every firewall chain of ours accepts: IPv4 echo-request,
/// destination-unreachable (fragmentation needed is path MTU discovery),
/// time-exceeded; IPv6 echo-request, unreachable, packet too big (path
/// MTU discovery: IPv6 routers never fragment), time exceeded, and
/// neighbour solicitation and advertisement, without which no IPv6
/// traffic flows at all.
pub fn icmp_types(family: Family) -> &'static [&'static str] {
    match family {
        Family::V4 => &["8", "3", "11"],
        Family::V6 => &["128", "1", "2", "3", "135", "136"],
    }
}

/// One ACCEPT per [`icmp_types`] entry.
pub fn icmp_accepts(family: Family) -> Vec<Args> {
    let (proto, module, option) = match family {
        Family::V4 => ("icmp", "icmp", "--icmp-type"),
        Family::V6 => ("ipv6-icmp", "icmp6", "--icmpv6-type"),
    };
    icmp_types(family)
        .iter()
        .map(|t| {
            Args::new()
                .args(&["-p", proto, "-m", module, option, t])
                .args(&["-j", "ACCEPT"])
        })
        .collect()
}

/// `10.0.0.1/32` / `fd00::1/128`: how iptables-save prints a host address.
pub fn host(addr: &IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// The refusal both controllers answer with: a port unreachable, which a
/// client sees at once (a DROP would make it wait for its timeout).
pub fn reject(family: Family) -> Args {
    let with = match family {
        Family::V4 => "icmp-port-unreachable",
        Family::V6 => "icmp6-port-unreachable",
    };
    Args::new().args(&["-j", "REJECT", "--reject-with", with])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_render_as_iptables_save_prints_them() {
        assert_eq!(
            icmp_accepts(Family::V6)[2].render(),
            "-p ipv6-icmp -m icmp6 --icmpv6-type 2 -j ACCEPT"
        );
        assert_eq!(
            icmp_accepts(Family::V4)[0].render(),
            "-p icmp -m icmp --icmp-type 8 -j ACCEPT"
        );
        assert_eq!(
            Args::new()
                .arg("-d")
                .arg(host(&"fd00::1".parse().unwrap()))
                .args(&["-m", "comment", "--comment", "a b"])
                .then(reject(Family::V6))
                .render(),
            "-d fd00::1/128 -m comment --comment \"a b\" -j REJECT --reject-with icmp6-port-unreachable"
        );
    }
}
