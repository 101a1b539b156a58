//! Health-check node ports, as kube-proxy serves them: for each LoadBalancer
//! Service of `externalTrafficPolicy: Local`, HTTP on its
//! `healthCheckNodePort` on every node address answers 200 while the
//! Service has a ready endpoint on this node and 503 otherwise, with a JSON
//! body naming the Service and counting `localEndpoints`. A cloud load
//! balancer then sends traffic only to nodes that can serve it.
//!
//! One tiny_http server per port, each on its own thread. The reconcile
//! pass hands over the wanted checks after each sync (`serve`): new ports
//! are opened, answers updated in place, gone ports closed.
//! tests/health_checks_netns.rs serves them in a network namespace of its
//! own, so a test never listens on the host's addresses.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

use tiny_http::{Header, Response, Server};

use crate::{
    desired::{HealthCheck, Problem},
    reconcile::dataplane::HealthCheckSink,
};

/// The listeners, by port.
#[derive(Default)]
pub struct HealthChecks {
    listeners: Mutex<BTreeMap<u16, Listener>>,
}

/// One port: its server, the answer it gives, the thread answering.
struct Listener {
    server: Arc<Server>,
    answer: Arc<Mutex<HealthCheck>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The thread's loop ends; the last Arc of the server closes the
        // socket (tiny_http's Drop wakes its accept thread).
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl HealthChecks {
    pub fn new() -> Self {
        Self::default()
    }

    /// The ports listened on now.
    pub fn ports(&self) -> Vec<u16> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, Listener>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl HealthCheckSink for HealthChecks {
    fn serve(&self, checks: &[HealthCheck]) -> Vec<Problem> {
        let mut listeners = self.lock();
        listeners.retain(|port, _| checks.iter().any(|c| c.port == *port));
        let mut problems = Vec::new();
        for check in checks {
            if let Some(l) = listeners.get(&check.port) {
                *l.answer.lock().unwrap_or_else(|p| p.into_inner()) = check.clone();
                continue;
            }
            match Listener::open(check.clone()) {
                Ok(l) => {
                    tracing::info!(port = check.port, service = %check.service, "health check listening");
                    listeners.insert(check.port, l);
                }
                Err(e) => problems.push(Problem {
                    object: check.service.to_string(),
                    field: "spec.healthCheckNodePort".into(),
                    message: format!("cannot listen on port {}: {e}", check.port),
                    skipped: true,
                }),
            }
        }
        problems
    }
}

impl Listener {
    /// Listens on every address of both families (`[::]`, dual-stack),
    /// else of IPv4 only where the node has no IPv6.
    fn open(check: HealthCheck) -> std::io::Result<Self> {
        let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, check.port));
        let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, check.port));
        let server = Server::http(v6)
            .or_else(|_| Server::http(v4))
            .map_err(std::io::Error::other)?;
        let server = Arc::new(server);
        let answer = Arc::new(Mutex::new(check));
        let thread = {
            let (server, answer) = (server.clone(), answer.clone());
            std::thread::Builder::new()
                .name("health-check".into())
                .spawn(move || answer_requests(&server, &answer))?
        };
        Ok(Self {
            server,
            answer,
            thread: Some(thread),
        })
    }
}

/// Answers every request (any path, as kube-proxy) until unblocked.
fn answer_requests(server: &Server, answer: &Mutex<HealthCheck>) {
    for request in server.incoming_requests() {
        let check = answer.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = request.respond(response(&check));
    }
}

fn response(check: &HealthCheck) -> Response<std::io::Cursor<Vec<u8>>> {
    let status = if check.healthy() { 200 } else { 503 };
    let mut r = Response::from_string(check.body()).with_status_code(status);
    for (k, v) in [
        ("Content-Type", "application/json"),
        ("X-Content-Type-Options", "nosniff"),
    ] {
        if let Ok(h) = Header::from_bytes(k, v) {
            r = r.with_header(h);
        }
    }
    r
}
