//! Changes to the kernel's IPVS table as plain values. Building one never
//! touches a socket: a caller can log the plan (`Display`), then hand the
//! whole list to `IpvsClient::execute_all`.

use std::fmt;

use super::{
    consts::IpvsCmd,
    types::{Destination, DestinationKey, Service, ServiceKey, Timeouts},
};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Request {
    /// `ipvsadm -A`: fails with `Exists` if the key is taken.
    AddService(Service),
    /// `ipvsadm -E`: replaces scheduler, flags, timeout and netmask.
    EditService(Service),
    /// `ipvsadm -D`: the service and all its destinations.
    DeleteService(ServiceKey),
    /// `ipvsadm -a`.
    AddDestination {
        service: ServiceKey,
        destination: Destination,
    },
    /// `ipvsadm -e`: forwarding method, weight and thresholds.
    EditDestination {
        service: ServiceKey,
        destination: Destination,
    },
    /// `ipvsadm -d`.
    DeleteDestination {
        service: ServiceKey,
        destination: DestinationKey,
    },
    /// `ipvsadm --set tcp tcpfin udp` (0 leaves one unchanged).
    SetTimeouts(Timeouts),
    /// `ipvsadm -C`: every service of this network namespace.
    Flush,
}

impl Request {
    /// The verb, for errors and metrics.
    pub fn op(&self) -> &'static str {
        self.verb().1
    }

    /// The generic netlink command that carries the request, and its verb.
    pub(crate) fn verb(&self) -> (IpvsCmd, &'static str) {
        match self {
            Request::AddService(_) => (IpvsCmd::NewService, "add service"),
            Request::EditService(_) => (IpvsCmd::SetService, "edit service"),
            Request::DeleteService(_) => (IpvsCmd::DelService, "delete service"),
            Request::AddDestination { .. } => (IpvsCmd::NewDest, "add destination"),
            Request::EditDestination { .. } => (IpvsCmd::SetDest, "edit destination"),
            Request::DeleteDestination { .. } => (IpvsCmd::DelDest, "delete destination"),
            Request::SetTimeouts(_) => (IpvsCmd::SetConfig, "set timeouts"),
            Request::Flush => (IpvsCmd::Flush, "flush"),
        }
    }

    /// The object, named the way ipvsadm prints it.
    pub fn target(&self) -> String {
        match self {
            Request::AddService(s) | Request::EditService(s) => s.key.to_string(),
            Request::DeleteService(k) => k.to_string(),
            Request::AddDestination {
                service,
                destination,
            }
            | Request::EditDestination {
                service,
                destination,
            } => format!("{} of {service}", destination.key()),
            Request::DeleteDestination {
                service,
                destination,
            } => format!("{destination} of {service}"),
            Request::SetTimeouts(t) => format!("tcp {} tcpfin {} udp {}", t.tcp, t.tcp_fin, t.udp),
            Request::Flush => "all services".to_owned(),
        }
    }

    /// The scheduler an add/edit names: its ENOENT means "no such scheduler".
    pub(crate) fn scheduler(&self) -> Option<&str> {
        match self {
            Request::AddService(s) | Request::EditService(s) => Some(s.scheduler.as_str()),
            _ => None,
        }
    }
}

/// One line of a plan: `add service TCP 10.0.0.1:80 rr persistent 300`.
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op(), self.target())?;
        match self {
            Request::AddService(s) | Request::EditService(s) => {
                write!(f, " {}", s.scheduler)?;
                for name in s.flags.settable().names() {
                    if name == "persistent" {
                        write!(f, " persistent {} mask {}", s.timeout, s.netmask)?;
                    } else {
                        write!(f, " {name}")?;
                    }
                }
                Ok(())
            }
            Request::AddDestination { destination: d, .. }
            | Request::EditDestination { destination: d, .. } => {
                write!(f, " {} weight {}", d.forward.name(), d.weight)?;
                if d.upper_threshold != 0 || d.lower_threshold != 0 {
                    write!(f, " thresholds {}/{}", d.upper_threshold, d.lower_threshold)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Family;
    use crate::kernel::ipvs::types::{ForwardMethod, Netmask, Scheduler};

    #[test]
    fn plans_read_like_ipvsadm() {
        let key = ServiceKey::tcp("10.0.0.1".parse().unwrap(), 80);
        let svc = Service::new(key, Scheduler::round_robin())
            .persistent(300, Netmask::prefix(Family::V4, 24).unwrap());
        assert_eq!(
            Request::AddService(svc).to_string(),
            "add service TCP 10.0.0.1:80 rr persistent 300 mask 255.255.255.0"
        );
        let dest = Destination::new("10.1.0.1".parse().unwrap(), 8080)
            .forward(ForwardMethod::Route)
            .weight(3)
            .thresholds(100, 10);
        assert_eq!(
            Request::AddDestination {
                service: key,
                destination: dest
            }
            .to_string(),
            "add destination 10.1.0.1:8080 of TCP 10.0.0.1:80 route weight 3 thresholds 100/10"
        );
        assert_eq!(
            Request::DeleteService(ServiceKey::fwmark(Family::V6, 9)).to_string(),
            "delete service FWM 9 IPv6"
        );
    }
}
