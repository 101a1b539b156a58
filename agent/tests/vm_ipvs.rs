//! The IPVS client against a real kernel, with ipvsadm as the oracle.
//!
//! All but the first test need IPVS, which only the test VM has: they are
//! `#[ignore]`d and run there (`cargo xtask vm-test -- <this binary>
//! --ignored`). Each works in its own network namespace, since IPVS state
//! is per namespace. No ipvsadm process is used by the code under test.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    net::{IpAddr, SocketAddr},
    process::Stdio,
};

use ipwarden::{
    desired::Family,
    kernel::ipvs::{
        readback, sync, Destination, DestinationKey, ForwardMethod, IpvsClient, IpvsError,
        IpvsErrorKind, Netmask, Request, Scheduler, Service, ServiceFlagBits, ServiceKey, Timeouts,
    },
    netns::{privileged, NetNs},
};

type Table = BTreeMap<ServiceKey, (Service, BTreeMap<DestinationKey, Destination>)>;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn client(ns: &NetNs) -> IpvsClient {
    ns.run(IpvsClient::connect).unwrap().unwrap()
}

fn table(entries: &[(Service, Vec<Destination>)]) -> Table {
    entries
        .iter()
        .map(|(s, ds)| {
            let mut s = s.clone();
            s.flags = s.flags.settable();
            (s.key, (s, ds.iter().map(|d| (d.key(), *d)).collect()))
        })
        .collect()
}

/// What our client reads, in the same shape (HASHED dropped).
fn ours(ipvs: &mut IpvsClient) -> Table {
    shaped(ipvs.list().unwrap())
}

/// What ipvsadm lists, read until two listings agree: its dump resumes at
/// a position counted over every namespace's services, so the test running
/// beside this one can shift ours (`IpvsClient::services` does the same).
fn ipvsadm(ns: &NetNs) -> Table {
    let mut last = None;
    for _ in 0..10 {
        let next = ipvsadm_once(ns);
        if next.is_some() && next == last {
            break;
        }
        last = next;
    }
    last.expect("two ipvsadm listings that agree")
}

/// What ipvsadm lists: `-Ln --exact` for services, forwarding and weight,
/// `-Ln --thresholds --exact` for the thresholds. None when the second
/// listing names an entry the first did not (shifted as above).
fn ipvsadm_once(ns: &NetNs) -> Option<Table> {
    let main = ns.output("ipvsadm", &["-Ln", "--exact"]).unwrap();
    let thresholds = ns
        .output("ipvsadm", &["-Ln", "--thresholds", "--exact"])
        .unwrap();
    let mut out = Table::new();
    let mut current = None;
    for line in main.lines().skip(3) {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.first() == Some(&"->") {
            let key = current.expect("destination before any service");
            let addr: SocketAddr = t[1].parse().unwrap();
            let forward = match t[2] {
                "Masq" => ForwardMethod::Masq,
                "Local" => ForwardMethod::Local,
                "Tunnel" => ForwardMethod::Tunnel,
                "Route" => ForwardMethod::Route,
                other => panic!("forward method {other} in {line:?}"),
            };
            let d = Destination::new(addr.ip(), addr.port())
                .forward(forward)
                .weight(t[3].parse().unwrap());
            out.get_mut(&key).unwrap().1.insert(d.key(), d);
        } else {
            let svc = parse_service(&t, line);
            current = Some(svc.key);
            out.insert(svc.key, (svc, BTreeMap::new()));
        }
    }
    let mut current = None;
    for line in thresholds.lines().skip(3) {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.first() == Some(&"->") {
            let addr: SocketAddr = t[1].parse().unwrap();
            let key = DestinationKey {
                addr: addr.ip(),
                port: addr.port(),
            };
            let d = out.get_mut(&current?)?.1.get_mut(&key)?;
            d.upper_threshold = t[2].parse().unwrap();
            d.lower_threshold = t[3].parse().unwrap();
        } else {
            current = Some(parse_service(&t, line).key);
        }
    }
    Some(out)
}

/// `TCP  10.0.0.1:80 sh (sh-fallback,sh-port) persistent 300 mask 255.255.255.0 ops`
fn parse_service(t: &[&str], line: &str) -> Service {
    let (key, rest) = match t[0] {
        "FWM" => {
            let mark = t[1].parse().unwrap();
            if t.get(2) == Some(&"IPv6") {
                (ServiceKey::fwmark(Family::V6, mark), &t[3..])
            } else {
                (ServiceKey::fwmark(Family::V4, mark), &t[2..])
            }
        }
        proto => {
            let a: SocketAddr = t[1].parse().unwrap();
            let key = match proto {
                "TCP" => ServiceKey::tcp(a.ip(), a.port()),
                "UDP" => ServiceKey::udp(a.ip(), a.port()),
                "SCTP" => ServiceKey::sctp(a.ip(), a.port()),
                other => panic!("protocol {other} in {line:?}"),
            };
            (key, &t[2..])
        }
    };
    let mut svc = Service::new(key, Scheduler::new(rest[0]).unwrap());
    let mut i = 1;
    while i < rest.len() {
        match rest[i] {
            "persistent" => {
                svc.flags |= ServiceFlagBits::PERSISTENT;
                svc.timeout = rest[i + 1].parse().unwrap();
                i += 1;
            }
            "mask" => {
                svc.netmask = match key.family() {
                    Family::V4 => Netmask::V4(rest[i + 1].parse().unwrap()),
                    Family::V6 => Netmask::V6(rest[i + 1].parse().unwrap()),
                };
                i += 1;
            }
            "ops" => svc.flags |= ServiceFlagBits::ONE_PACKET,
            flags if flags.starts_with('(') => {
                for f in flags.trim_matches(|c| c == '(' || c == ')').split(',') {
                    svc.flags |= match f {
                        "flag-1" | "sh-fallback" | "mh-fallback" => ServiceFlagBits::SCHED1,
                        "flag-2" | "sh-port" | "mh-port" => ServiceFlagBits::SCHED2,
                        "flag-3" => ServiceFlagBits::SCHED3,
                        other => panic!("scheduler flag {other} in {line:?}"),
                    };
                }
            }
            other => panic!("unexpected {other:?} in {line:?}"),
        }
        i += 1;
    }
    svc
}

fn restore(ns: &NetNs, script: &str) {
    let mut child = ns
        .command("ipvsadm")
        .arg("-R")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "ipvsadm -R failed:\n{script}"
    );
}

fn run_all(ipvs: &mut IpvsClient, reqs: &[Request]) {
    for (req, result) in reqs.iter().zip(ipvs.execute_all(reqs)) {
        if let Err(e) = result {
            panic!("{req}: {e}");
        }
    }
}

/// A mix of every kind of service and destination we support.
fn variety() -> Vec<(Service, Vec<Destination>)> {
    let v4 = |s| Netmask::prefix(Family::V4, s).unwrap();
    let v6 = |s| Netmask::prefix(Family::V6, s).unwrap();
    vec![
        (
            Service::new(
                ServiceKey::tcp(ip("10.0.0.1"), 80),
                Scheduler::round_robin(),
            ),
            vec![
                Destination::new(ip("10.1.0.1"), 8080),
                Destination::new(ip("10.1.0.2"), 8080).weight(5),
                Destination::new(ip("10.1.0.3"), 8080)
                    .weight(0)
                    .thresholds(100, 10),
            ],
        ),
        (
            Service::new(
                ServiceKey::udp(ip("10.0.0.2"), 53),
                Scheduler::weighted_round_robin(),
            )
            .persistent(300, v4(24)),
            vec![
                Destination::new(ip("10.1.0.4"), 53)
                    .forward(ForwardMethod::Route)
                    .weight(2),
                Destination::new(ip("10.1.0.5"), 53)
                    .forward(ForwardMethod::Tunnel)
                    .weight(3),
            ],
        ),
        (
            Service::new(
                ServiceKey::sctp(ip("10.0.0.3"), 3868),
                Scheduler::least_connection(),
            ),
            vec![Destination::new(ip("10.1.0.6"), 3868).thresholds(50, 5)],
        ),
        (
            Service::new(
                ServiceKey::tcp(ip("fd00::1"), 443),
                Scheduler::source_hashing(),
            )
            .with_flags(ServiceFlagBits::SCHED1 | ServiceFlagBits::SCHED2),
            vec![
                Destination::new(ip("fd00:1::1"), 8443),
                Destination::new(ip("fd00:1::2"), 443).forward(ForwardMethod::Route),
            ],
        ),
        (
            Service::new(ServiceKey::udp(ip("fd00::2"), 5353), Scheduler::maglev())
                .persistent(600, v6(64))
                .with_flags(ServiceFlagBits::ONE_PACKET | ServiceFlagBits::SCHED1),
            vec![Destination::new(ip("fd00:1::3"), 5353).weight(7)],
        ),
        (
            Service::new(ServiceKey::fwmark(Family::V4, 5), Scheduler::round_robin())
                .persistent(1800, v4(32)),
            vec![
                Destination::new(ip("10.1.0.7"), 0).forward(ForwardMethod::Route),
                Destination::new(ip("10.1.0.8"), 80),
            ],
        ),
        (
            Service::new(
                ServiceKey::fwmark(Family::V6, 6),
                Scheduler::weighted_least_connection(),
            ),
            vec![Destination::new(ip("fd00:1::4"), 0).forward(ForwardMethod::Tunnel)],
        ),
        (
            Service::new(
                ServiceKey::udp(ip("10.0.0.4"), 4789),
                Scheduler::round_robin(),
            )
            .with_flags(ServiceFlagBits::ONE_PACKET),
            vec![],
        ),
    ]
}

fn requests_for(entries: &[(Service, Vec<Destination>)]) -> Vec<Request> {
    let mut reqs = Vec::new();
    for (svc, dests) in entries {
        reqs.push(Request::AddService(svc.clone()));
        for d in dests {
            reqs.push(Request::AddDestination {
                service: svc.key,
                destination: *d,
            });
        }
    }
    reqs
}

/// The host kernel has no IPVS: resolving the family fails with the typed
/// error and its hint. (On a host that has ip_vs loaded, connecting works.)
#[test]
fn no_ipvs_is_a_typed_error_with_a_hint() {
    if !privileged("no_ipvs_is_a_typed_error_with_a_hint") {
        return;
    }
    let ns = NetNs::new("ipw-ipvs").unwrap();
    let result = ns.run(IpvsClient::connect).unwrap();
    if std::path::Path::new("/sys/module/ip_vs").exists() {
        assert!(result.is_ok(), "ip_vs is loaded but: {:?}", result.err());
        return;
    }
    match result {
        Err(e) if e.is(IpvsErrorKind::NoIpvs) => {
            assert!(e.to_string().contains("load the ip_vs module"), "{e}")
        }
        Err(e) => panic!("expected NoIpvs, got {e:?}"),
        Ok(_) => panic!("IPVS resolved without the ip_vs module"),
    }
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_services_we_write_are_what_ipvsadm_lists() {
    let ns = NetNs::new("ipw-ipvs").unwrap();
    let mut ipvs = client(&ns);
    let want = variety();
    run_all(&mut ipvs, &requests_for(&want));
    assert_eq!(ipvsadm(&ns), table(&want));
    assert_eq!(ours(&mut ipvs), table(&want));
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_services_ipvsadm_writes_are_what_we_read() {
    let ns = NetNs::new("ipw-ipvs").unwrap();
    restore(
        &ns,
        "-A -t 10.0.0.1:80 -s rr\n\
         -a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 1\n\
         -a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -w 5 -x 100 -y 10\n\
         -A -u 10.0.0.2:53 -s wrr -p 300 -M 255.255.255.0\n\
         -a -u 10.0.0.2:53 -r 10.1.0.4:53 -g -w 2\n\
         -a -u 10.0.0.2:53 -r 10.1.0.5:53 -i -w 3\n\
         --add-service --sctp-service 10.0.0.3:3868 -s lc\n\
         -a --sctp-service 10.0.0.3:3868 -r 10.1.0.6:3868 -m -w 1 -x 50 -y 5\n\
         -A -t [fd00::1]:443 -s sh -b sh-fallback,sh-port\n\
         -a -t [fd00::1]:443 -r [fd00:1::1]:8443 -m -w 1\n\
         -A -u [fd00::2]:5353 -s mh -p 600 -M 64 -o -b mh-fallback\n\
         -a -u [fd00::2]:5353 -r [fd00:1::3]:5353 -m -w 7\n\
         -A -f 5 -s rr -p 1800\n\
         -a -f 5 -r 10.1.0.7 -g -w 1\n\
         -A -f 6 -6 -s wlc\n\
         -a -f 6 -6 -r fd00:1::4 -i -w 1\n",
    );
    let v4 = |s| Netmask::prefix(Family::V4, s).unwrap();
    let v6 = |s| Netmask::prefix(Family::V6, s).unwrap();
    let want = vec![
        (
            Service::new(
                ServiceKey::tcp(ip("10.0.0.1"), 80),
                Scheduler::round_robin(),
            ),
            vec![
                Destination::new(ip("10.1.0.1"), 8080),
                Destination::new(ip("10.1.0.2"), 8080)
                    .weight(5)
                    .thresholds(100, 10),
            ],
        ),
        (
            Service::new(
                ServiceKey::udp(ip("10.0.0.2"), 53),
                Scheduler::weighted_round_robin(),
            )
            .persistent(300, v4(24)),
            vec![
                Destination::new(ip("10.1.0.4"), 53)
                    .forward(ForwardMethod::Route)
                    .weight(2),
                Destination::new(ip("10.1.0.5"), 53)
                    .forward(ForwardMethod::Tunnel)
                    .weight(3),
            ],
        ),
        (
            Service::new(
                ServiceKey::sctp(ip("10.0.0.3"), 3868),
                Scheduler::least_connection(),
            ),
            vec![Destination::new(ip("10.1.0.6"), 3868).thresholds(50, 5)],
        ),
        (
            Service::new(
                ServiceKey::tcp(ip("fd00::1"), 443),
                Scheduler::source_hashing(),
            )
            .with_flags(ServiceFlagBits::SCHED1 | ServiceFlagBits::SCHED2),
            vec![Destination::new(ip("fd00:1::1"), 8443)],
        ),
        (
            Service::new(ServiceKey::udp(ip("fd00::2"), 5353), Scheduler::maglev())
                .persistent(600, v6(64))
                .with_flags(ServiceFlagBits::ONE_PACKET | ServiceFlagBits::SCHED1),
            vec![Destination::new(ip("fd00:1::3"), 5353).weight(7)],
        ),
        (
            Service::new(ServiceKey::fwmark(Family::V4, 5), Scheduler::round_robin())
                .persistent(1800, v4(32)),
            vec![Destination::new(ip("10.1.0.7"), 0).forward(ForwardMethod::Route)],
        ),
        (
            Service::new(
                ServiceKey::fwmark(Family::V6, 6),
                Scheduler::weighted_least_connection(),
            ),
            vec![Destination::new(ip("fd00:1::4"), 0).forward(ForwardMethod::Tunnel)],
        ),
    ];
    let mut ipvs = client(&ns);
    assert_eq!(
        ipvsadm(&ns),
        table(&want),
        "the oracle disagrees with the script"
    );
    assert_eq!(ours(&mut ipvs), table(&want));
    // Reading one service by key gives the same as the dump.
    let key = ServiceKey::udp(ip("10.0.0.2"), 53);
    let one = ipvs.service(&key).unwrap();
    assert!(one.service.same_config(&table(&want)[&key].0));
    assert!(one.service.flags.contains(ServiceFlagBits::HASHED));
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_edit_and_delete() {
    let ns = NetNs::new("ipw-ipvs").unwrap();
    let mut ipvs = client(&ns);
    let key = ServiceKey::tcp(ip("10.0.0.1"), 80);
    let a = Destination::new(ip("10.1.0.1"), 80);
    let b = Destination::new(ip("10.1.0.2"), 80);
    let svc = Service::new(key, Scheduler::round_robin());
    run_all(&mut ipvs, &requests_for(&[(svc.clone(), vec![a, b])]));

    let edited = Service::new(key, Scheduler::weighted_least_connection())
        .persistent(120, Netmask::prefix(Family::V4, 16).unwrap());
    ipvs.execute(&Request::EditService(edited.clone())).unwrap();
    let b2 = b.forward(ForwardMethod::Route).weight(9).thresholds(20, 2);
    ipvs.execute(&Request::EditDestination {
        service: key,
        destination: b2,
    })
    .unwrap();
    assert_eq!(ipvsadm(&ns), table(&[(edited.clone(), vec![a, b2])]));

    // Persistence off again: the edit replaces flags, it does not merge.
    let plain = Service::new(key, Scheduler::round_robin());
    ipvs.execute(&Request::EditService(plain.clone())).unwrap();
    ipvs.execute(&Request::DeleteDestination {
        service: key,
        destination: a.key(),
    })
    .unwrap();
    assert_eq!(ipvsadm(&ns), table(&[(plain, vec![b2])]));
    assert_eq!(ours(&mut ipvs), ipvsadm(&ns));

    ipvs.execute(&Request::DeleteService(key)).unwrap();
    assert!(ipvsadm(&ns).is_empty());
    assert!(ipvs.list().unwrap().is_empty());

    run_all(&mut ipvs, &requests_for(&variety()));
    assert_eq!(ipvs.services().unwrap().len(), variety().len());
    ipvs.execute(&Request::Flush).unwrap();
    assert!(ipvsadm(&ns).is_empty());
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_timeouts_match_ipvsadm() {
    let ns = NetNs::new("ipw-ipvs").unwrap();
    let mut ipvs = client(&ns);
    let shown = |ns: &NetNs| ns.output("ipvsadm", &["-L", "--timeout"]).unwrap();

    let t = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    ipvs.execute(&Request::SetTimeouts(t)).unwrap();
    assert_eq!(shown(&ns).trim(), "Timeout (tcp tcpfin udp): 900 120 300");
    assert_eq!(ipvs.timeouts().unwrap(), t);

    // 0 leaves a timeout as it is.
    ipvs.execute(&Request::SetTimeouts(Timeouts {
        tcp: 0,
        tcp_fin: 60,
        udp: 0,
    }))
    .unwrap();
    assert_eq!(shown(&ns).trim(), "Timeout (tcp tcpfin udp): 900 60 300");

    ns.output("ipvsadm", &["--set", "100", "50", "30"]).unwrap();
    assert_eq!(
        ipvs.timeouts().unwrap(),
        Timeouts {
            tcp: 100,
            tcp_fin: 50,
            udp: 30
        }
    );
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_errors_are_typed_and_name_the_object() {
    let ns = NetNs::new("ipw-ipvs").unwrap();
    let mut ipvs = client(&ns);
    let key = ServiceKey::tcp(ip("10.0.0.1"), 80);
    let svc = Service::new(key, Scheduler::round_robin());
    let dest = Destination::new(ip("10.1.0.1"), 80);
    ipvs.execute(&Request::AddService(svc.clone())).unwrap();
    ipvs.execute(&Request::AddDestination {
        service: key,
        destination: dest,
    })
    .unwrap();

    let e = ipvs.execute(&Request::AddService(svc.clone())).unwrap_err();
    assert!(e.is_exists(), "{e:?}");
    assert_eq!(e.to_string(), "add service TCP 10.0.0.1:80: already exists");

    let e = ipvs
        .execute(&Request::AddDestination {
            service: key,
            destination: dest,
        })
        .unwrap_err();
    assert!(e.is_exists(), "{e:?}");
    assert!(
        e.to_string().contains("10.1.0.1:80 of TCP 10.0.0.1:80"),
        "{e}"
    );

    let missing = ServiceKey::udp(ip("10.0.0.9"), 53);
    let e = ipvs.execute(&Request::DeleteService(missing)).unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
    assert_eq!(e.to_string(), "delete service UDP 10.0.0.9:53: not found");

    let e = ipvs
        .execute(&Request::AddDestination {
            service: missing,
            destination: dest,
        })
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(e.to_string().contains("of UDP 10.0.0.9:53"), "{e}");

    let e = ipvs
        .execute(&Request::DeleteDestination {
            service: key,
            destination: DestinationKey {
                addr: ip("10.1.0.9"),
                port: 80,
            },
        })
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));

    let e = ipvs
        .execute(&Request::EditService(Service::new(
            missing,
            Scheduler::round_robin(),
        )))
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");

    let e = ipvs.service(&missing).unwrap_err();
    assert!(e.is_not_found(), "{e:?}");

    let bogus = Service::new(
        ServiceKey::tcp(ip("10.0.0.2"), 80),
        Scheduler::new("nosuch").unwrap(),
    );
    let e = ipvs
        .execute(&Request::AddService(bogus.clone()))
        .unwrap_err();
    assert!(
        e.is(IpvsErrorKind::NoScheduler) && e.detail.as_deref() == Some("nosuch"),
        "{e:?}"
    );

    // In a batch, each request gets its own answer, in order.
    let results = ipvs.execute_all(&[
        Request::AddService(svc.clone()),
        Request::DeleteService(missing),
        Request::AddService(Service::new(
            ServiceKey::tcp(ip("10.0.0.3"), 80),
            Scheduler::round_robin(),
        )),
        Request::AddDestination {
            service: missing,
            destination: dest,
        },
    ]);
    assert!(results[0].as_ref().unwrap_err().is_exists());
    assert!(results[1].as_ref().unwrap_err().is_not_found());
    assert!(results[2].is_ok());
    assert!(results[3].as_ref().unwrap_err().is_not_found());
    assert_eq!(ipvsadm(&ns).len(), 2);
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_thousands_of_requests_across_batches() {
    let ns = NetNs::new("ipw-ipvs").unwrap();
    let mut ipvs = client(&ns);
    let n = 1500u32;
    let mut want = Vec::new();
    for i in 0..n {
        let vip = IpAddr::from([10, 96, (i >> 8) as u8, i as u8]);
        let key = ServiceKey::tcp(vip, 80);
        let dests = (1..=3u8)
            .map(|j| {
                Destination::new(IpAddr::from([10, 244, j, (i % 250) as u8]), 8080)
                    .weight(u32::from(j))
            })
            .collect();
        want.push((Service::new(key, Scheduler::round_robin()), dests));
    }
    let reqs = requests_for(&want);
    assert!(
        reqs.len() > 4 * ipvs.batch_size(),
        "must span several batches"
    );
    run_all(&mut ipvs, &reqs);
    assert_eq!(ours(&mut ipvs), table(&want));
    assert_eq!(ipvsadm(&ns), table(&want));

    // The same requests again: every one refused as existing, none lost.
    let again = ipvs.execute_all(&reqs);
    assert_eq!(again.len(), reqs.len());
    assert!(again
        .iter()
        .all(|r| r.as_ref().is_err_and(IpvsError::is_exists)));
}

/// A plan run as it is made (`sync::apply_plan`, full batches as soon as
/// a few wait) programs the same table as the whole plan, and a request
/// that fails in the middle is returned while every other one runs.
#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_a_plan_run_as_made_programs_every_request_and_returns_each_failure() {
    let ns = NetNs::new("ipw-ipvs").unwrap();
    let mut ipvs = client(&ns);
    // Small batches: 1500 services and 4500 destinations span many chunks.
    ipvs.set_batch_size(7);
    let want = plain_services(96, 1500);
    // The kernel already holds one of them, which the plan (told of an
    // empty table) adds again: its service and destinations are refused.
    let (taken, taken_dests) = &want[700];
    run_all(&mut ipvs, &requests_for(&want[700..701]));
    let report = sync::apply_plan(&mut ipvs, &want, &[], &sync::IpvsScope::default());
    let errors = report.expect_err("the taken service is refused");
    assert_eq!(errors.len(), 1 + taken_dests.len(), "{errors:?}");
    assert!(errors.iter().all(IpvsError::is_exists), "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| e.target.contains(&taken.key.to_string())),
        "{errors:?}"
    );
    assert_eq!(ipvsadm(&ns), table(&want));

    // Against the table read back: nothing to do.
    let actual = ipvs.list_configs().unwrap();
    let report = sync::apply_plan(&mut ipvs, &want, &actual, &sync::IpvsScope::default());
    assert_eq!(report.unwrap().services_unchanged, want.len());
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_cli_prints_the_table() {
    let ns = NetNs::new("ipw-ipvs").unwrap();
    let mut ipvs = client(&ns);
    let want = variety();
    run_all(&mut ipvs, &requests_for(&want));
    let bin = env!("CARGO_BIN_EXE_ipwarden");

    let json = ns.output(bin, &["kernel", "ipvs", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let services = v.as_array().unwrap();
    assert_eq!(services.len(), want.len());
    let tcp = services
        .iter()
        .find(|s| s["address"] == "10.0.0.1" && s["port"] == 80)
        .unwrap();
    assert_eq!(tcp["protocol"], "TCP");
    assert_eq!(tcp["scheduler"], "rr");
    assert_eq!(tcp["flags"], serde_json::json!(["hashed"]));
    assert!(tcp["fwmark"].is_null());
    let dests = tcp["destinations"].as_array().unwrap();
    assert_eq!(dests.len(), 3);
    assert_eq!(dests[1]["address"], "10.1.0.2");
    assert_eq!(dests[1]["weight"], 5);
    assert_eq!(dests[1]["forward"], "masq");
    let udp = services
        .iter()
        .find(|s| s["address"] == "10.0.0.2")
        .unwrap();
    assert_eq!(udp["flags"], serde_json::json!(["persistent", "hashed"]));
    assert_eq!(udp["timeout"], 300);
    assert_eq!(udp["destinations"][0]["forward"], "route");
    assert_eq!(udp["destinations"][1]["forward"], "tunnel");
    let fwm = services.iter().find(|s| s["fwmark"] == 5).unwrap();
    assert!(fwm["protocol"].is_null());
    assert!(fwm["address"].is_null());

    // The human table is ipvsadm's, line for line (order aside: ipvsadm's
    // own sort is not a total order on addresses).
    let text = ns.output(bin, &["kernel", "ipvs"]).unwrap();
    let oracle = ns.output("ipvsadm", &["-Ln"]).unwrap();
    assert_eq!(
        blocks(&text),
        blocks(&oracle),
        "ours:\n{text}\nipvsadm:\n{oracle}"
    );
}

/// The shape of a read: services by key (HASHED dropped), destinations by key.
fn shaped(read: Vec<impl Into<ipwarden::kernel::ipvs::ServiceConfig>>) -> Table {
    read.into_iter()
        .map(|vs| {
            let vs = vs.into();
            let mut s = vs.service;
            s.flags = s.flags.settable();
            let dests = vs.destinations.into_iter().map(|d| (d.key(), d)).collect();
            (s.key, (s, dests))
        })
        .collect()
}

/// The cheap full read (getsockopt, netlink for the desired services it
/// cannot show entirely) gives the plan what the netlink read gives, a
/// scheduler flag somebody set on a service that wants none included.
#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_the_cheap_read_sees_what_netlink_sees() {
    let ns = NetNs::new("ipw-ipvs").unwrap();
    let mut ipvs = client(&ns);
    let want = variety();
    run_all(&mut ipvs, &requests_for(&want));
    let keys: Vec<ServiceKey> = want.iter().map(|(s, _)| s.key).collect();
    let cheap = |ipvs: &mut IpvsClient| {
        let read = ns.run(|| readback::read_for_plan(ipvs, &keys));
        shaped(read.unwrap().unwrap())
    };
    assert_eq!(cheap(&mut ipvs), ours(&mut ipvs));
    let key = ServiceKey::udp(ip("10.0.0.4"), 4789);
    let (mut flagged, _) = ours(&mut ipvs)[&key].clone();
    flagged.flags |= ServiceFlagBits::SCHED1;
    ipvs.execute(&Request::EditService(flagged)).unwrap();
    let after = cheap(&mut ipvs);
    assert!(after[&key].0.flags.contains(ServiceFlagBits::SCHED1));
    assert_eq!(after, ours(&mut ipvs));
}

/// getsockopt's listing shows every IPv4 service netlink lists, each
/// field a plan compares equal (flags, persistence in seconds, netmask,
/// thresholds, every forward method); a field only it shows among the cheap reads (a threshold set by
/// ipvsadm) is in it, and moves its fingerprint. Its summary read without
/// decoding (`sockopt::summary`) is the read's, partial services included.
#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_the_getsockopt_listing_is_netlinks_ipv4_table() {
    use ipwarden::kernel::ipvs::sockopt;
    let ns = NetNs::new("ipw-ipvs").unwrap();
    let mut ipvs = client(&ns);
    let want = variety();
    run_all(&mut ipvs, &requests_for(&want));
    let netlink = ours(&mut ipvs);
    let read = ns.run(sockopt::read).unwrap().unwrap();
    // Marks are never ours: shown by the interface, left out of the read.
    let v4: Table = netlink
        .iter()
        .filter(|(k, _)| {
            matches!(
                k,
                ServiceKey::Addr {
                    addr: IpAddr::V4(_),
                    ..
                }
            )
        })
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    assert_eq!(v4.len(), 4, "the variety's IPv4 address services");
    assert_eq!(shaped(read.services), v4);
    assert!(read.summary.partial.is_empty());

    let again = ns.run(sockopt::read).unwrap().unwrap();
    assert_eq!(again.summary, read.summary);
    let summary = ns.run(sockopt::summary).unwrap().unwrap();
    assert_eq!(
        summary, read.summary,
        "the summary is the read's, undecoded"
    );
    ns.output(
        "ipvsadm",
        &[
            "-e",
            "-t",
            "10.0.0.1:80",
            "-r",
            "10.1.0.1:8080",
            "-m",
            "-x",
            "77",
        ],
    )
    .unwrap();
    let after = ns.run(sockopt::read).unwrap().unwrap();
    assert_ne!(after.summary.fingerprint, read.summary.fingerprint);
    assert_eq!(ns.run(sockopt::summary).unwrap().unwrap(), after.summary);
    let key = ServiceKey::tcp(ip("10.0.0.1"), 80);
    let dest = &shaped(after.services)[&key].1[&DestinationKey {
        addr: ip("10.1.0.1"),
        port: 8080,
    }];
    assert_eq!(dest.upper_threshold, 77);

    // An IPv6 tunnel destination of an IPv4 service: the interface does
    // not list it, so the service is partial, in the read and the summary.
    run_all(
        &mut ipvs,
        &[Request::AddDestination {
            service: key,
            destination: Destination::new(ip("fd00:1::1"), 8080).forward(ForwardMethod::Tunnel),
        }],
    );
    let mixed = ns.run(sockopt::read).unwrap().unwrap();
    assert_eq!(mixed.summary.partial, BTreeSet::from([key]));
    assert_eq!(ns.run(sockopt::summary).unwrap().unwrap(), mixed.summary);
}

/// Header lines, then each service line with its sorted destination lines,
/// the services sorted.
fn blocks(listing: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = listing.lines();
    let header = lines.by_ref().take(3).map(str::to_owned).collect();
    let mut blocks: Vec<Vec<String>> = Vec::new();
    for line in lines {
        if line.starts_with("  ->") {
            blocks.last_mut().unwrap().push(line.to_owned());
        } else {
            blocks.push(vec![line.to_owned()]);
        }
    }
    for b in &mut blocks {
        b[1..].sort();
    }
    blocks.sort();
    (header, blocks)
}

/// `count` plain TCP services on `net`.0.x.y:80, one destination each.
fn plain_services(net: u8, count: u16) -> Vec<(Service, Vec<Destination>)> {
    (0..count)
        .map(|i| {
            let [hi, lo] = i.to_be_bytes();
            let vip = IpAddr::from([10, net, hi, lo]);
            let service = Service::new(ServiceKey::tcp(vip, 80), Scheduler::round_robin());
            (service, vec![Destination::new(ip("10.244.0.2"), 8080)])
        })
        .collect()
}

/// Another namespace's IPVS services (which make the kernel's
/// `/proc/net/ip_vs` skip some of ours when it is read in more than one
/// page) leave the cheap read whole: it gives the plan every service
/// netlink lists.
#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_the_cheap_read_misses_nothing_beside_another_namespaces_services() {
    let foreign = NetNs::new("ipw-ipvs-other").unwrap();
    run_all(
        &mut client(&foreign),
        &requests_for(&plain_services(9, 300)),
    );
    let ns = NetNs::new("ipw-ipvs").unwrap();
    let mut ipvs = client(&ns);
    let want = plain_services(8, 300);
    run_all(&mut ipvs, &requests_for(&want));
    let netlink = ours(&mut ipvs);
    assert_eq!(netlink.len(), want.len());
    let keys: Vec<ServiceKey> = want.iter().map(|(s, _)| s.key).collect();
    let cheap = ns
        .run(|| readback::read_for_plan(&mut ipvs, &keys))
        .unwrap()
        .unwrap();
    assert_eq!(shaped(cheap), netlink);
}
