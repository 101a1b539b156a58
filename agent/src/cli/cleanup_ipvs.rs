//! Which IPVS services `ipwarden cleanup` removes: every one the agent
//! could have created. The scope of the running agent (VIPs on ipwarden0,
//! NodePorts in the range on local addresses) misses NodePorts on a Node
//! address that is on no interface and NodePorts programmed outside the
//! range by an older agent; the agent's own record of its frontends,
//! `ipwarden-svip-prt` (both families: address, protocol, port), names
//! them exactly, so it is read before the sets are destroyed.

use std::net::IpAddr;

use anyhow::Result;

use crate::{
    controllers::services::names::SET_SVIP_PRT,
    desired::{Family, Protocol},
    kernel::{
        ipset::{Entry, IpsetClient, ProtoPort, SetName},
        ipvs::{IpvsClient, Request, ServiceKey},
        ipvs_sync::IpvsScope,
    },
};

/// The frontends the agent recorded (empty when it never ran the proxy).
pub fn recorded_frontends(ipset: &mut IpsetClient) -> Result<Vec<Entry>> {
    let names = ipset.list_names()?;
    let mut out = Vec::new();
    for family in Family::ALL {
        let name = family.set_name(SET_SVIP_PRT);
        if names.contains(&name) {
            let set = ipset.list(&SetName::new(name.as_str())?)?;
            out.extend(set.members.into_iter().map(|e| e.entry));
        }
    }
    Ok(out)
}

fn entry(protocol: Protocol, addr: IpAddr, port: u16) -> Entry {
    let pp = match protocol {
        Protocol::Tcp => ProtoPort::tcp(port),
        Protocol::Udp => ProtoPort::udp(port),
        Protocol::Sctp => ProtoPort::sctp(port),
    };
    Entry::IpPort(addr, pp)
}

/// Was this kernel service the agent's (in its scope or in its record)?
pub fn ours(key: &ServiceKey, scope: &IpvsScope, recorded: &[Entry]) -> bool {
    match key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => scope.owns(key) || recorded.contains(&entry(*protocol, *addr, *port)),
        ServiceKey::Fwmark { .. } => false,
    }
}

/// Deletes the recorded services the scope missed; the count.
pub fn remove_recorded(
    ipvs: &mut IpvsClient,
    scope: &IpvsScope,
    recorded: &[Entry],
) -> Result<usize> {
    let mut removed = 0;
    for s in ipvs.services()? {
        if ours(&s.service.key, scope, recorded) {
            ipvs.execute(&Request::DeleteService(s.service.key))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The agent's services still in the kernel, named as ipvsadm does.
pub fn remaining(
    ipvs: &mut IpvsClient,
    scope: &IpvsScope,
    recorded: &[Entry],
) -> Result<Vec<String>> {
    Ok(ipvs
        .services()?
        .into_iter()
        .filter(|s| ours(&s.service.key, scope, recorded))
        .map(|s| s.service.key.to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_node_port_is_ours_outside_the_scope_and_nothing_else_is() {
        let scope = IpvsScope {
            node_port_range: (30000, 32767),
            ..IpvsScope::default()
        };
        let off_interface: IpAddr = "192.0.2.10".parse().unwrap();
        let recorded = [entry(Protocol::Tcp, off_interface, 80)];
        assert!(ours(&ServiceKey::tcp(off_interface, 80), &scope, &recorded));
        assert!(!ours(
            &ServiceKey::udp(off_interface, 80),
            &scope,
            &recorded
        ));
        assert!(!ours(
            &ServiceKey::tcp(off_interface, 81),
            &scope,
            &recorded
        ));
    }
}
