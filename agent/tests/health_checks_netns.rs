//! Health-check node ports (api/health_checks.rs) as the daemon opens
//! them, on every address, but of a network namespace of the test's own:
//! nothing listens on the host's addresses, and no other test can take
//! the port in between (the namespace has no other listener). Oracles:
//! plain HTTP over TCP, and `ss -ltn` in the namespace.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use ipwarden::{
    api::HealthChecks,
    desired::{HealthCheck, ServiceRef},
    lab::wait_until,
    netns::{privileged, NetNs},
    reconcile::dataplane::HealthCheckSink,
};

/// A healthCheckNodePort, as a Service would name one.
const PORT: u16 = 32100;

fn check(local_endpoints: u32) -> HealthCheck {
    HealthCheck {
        port: PORT,
        service: ServiceRef::new("shop", "web"),
        local_endpoints,
    }
}

/// The answer to a GET on `to`, as one string (status line to body).
fn get(to: &str) -> std::io::Result<String> {
    let to: SocketAddr = to.parse().unwrap();
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The namespace's TCP listeners on `PORT`, as `ss` lists them.
fn listening(ns: &NetNs) -> Vec<String> {
    ns.output("ss", &["-Hltn", &format!("sport = :{PORT}")])
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(String::from))
        .collect()
}

#[test]
fn listeners_open_answer_on_every_address_and_close_with_the_checks() {
    if !privileged("listeners_open_answer_on_every_address_and_close_with_the_checks") {
        return;
    }
    let ns = NetNs::new("ipw-hc").unwrap();
    // A node address beside loopback's.
    ns.ip(&["addr", "add", "10.0.1.1/32", "dev", "lo"]).unwrap();
    let hc = HealthChecks::new();

    let problems = ns.run(|| hc.serve(&[check(1)])).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    // Every address of the namespace: one dual-stack socket on [::].
    assert_eq!(listening(&ns), [format!("*:{PORT}")]);
    for to in [format!("127.0.0.1:{PORT}"), format!("10.0.1.1:{PORT}")] {
        let ok = ns.run(|| get(&to)).unwrap().unwrap();
        assert!(ok.starts_with("HTTP/1.1 200"), "{to}: {ok}");
        assert!(ok.contains("\"localEndpoints\":1"), "{ok}");
        assert!(ok.contains("\"name\":\"web\""), "{ok}");
    }

    assert!(ns.run(|| hc.serve(&[check(0)])).unwrap().is_empty());
    let down = ns
        .run(|| get(&format!("127.0.0.1:{PORT}")))
        .unwrap()
        .unwrap();
    assert!(down.starts_with("HTTP/1.1 503"), "{down}");
    assert!(down.contains("\"localEndpoints\":0"), "{down}");

    assert!(ns.run(|| hc.serve(&[])).unwrap().is_empty());
    assert!(hc.ports().is_empty());
    // tiny_http's accept thread lets go of the socket just after.
    assert!(
        wait_until(Duration::from_secs(5), || listening(&ns).is_empty()),
        "the port is not closed with its Service: {:?}",
        listening(&ns)
    );
}

#[test]
fn a_port_taken_by_another_program_is_a_problem_of_its_service() {
    if !privileged("a_port_taken_by_another_program_is_a_problem_of_its_service") {
        return;
    }
    let ns = NetNs::new("ipw-hc").unwrap();
    let problems = ns
        .run(|| {
            let _taken = std::net::TcpListener::bind(("::", PORT)).unwrap();
            HealthChecks::new().serve(&[check(1)])
        })
        .unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].object, "Service shop/web");
    assert_eq!(problems[0].field, "spec.healthCheckNodePort");
    assert!(
        problems[0].message.contains(&format!("port {PORT}")),
        "{problems:?}"
    );
}
