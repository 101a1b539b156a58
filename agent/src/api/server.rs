//! Small HTTP servers on their own threads (tiny_http): the agent's loop is
//! synchronous, and a few read-only endpoints need no async runtime.

use std::net::SocketAddr;

use tiny_http::{Header, Response, Server};

use super::{state::StatusView, Metrics};

/// What one listening address answers. `/state` describes the cluster
/// (every Service, isolated pod and policy rule), so only the loopback
/// status address carries it; the node's addresses get metrics and health.
#[derive(Clone, Default)]
pub struct Routes {
    /// `/metrics` (OpenMetrics).
    pub metrics: bool,
    /// `/healthz` and `/readyz`.
    pub health: bool,
    /// `/state`, for `ipwarden status` and `ipwarden explain`.
    pub state: Option<StatusView>,
}

impl Routes {
    /// Both sets of routes, for two flags naming one address.
    pub fn merge(self, other: Routes) -> Routes {
        Routes {
            metrics: self.metrics || other.metrics,
            health: self.health || other.health,
            state: self.state.or(other.state),
        }
    }

    /// The paths served, for the log.
    pub fn paths(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.metrics {
            out.push("/metrics");
        }
        if self.health {
            out.extend(["/healthz", "/readyz"]);
        }
        if self.state.is_some() {
            out.push("/state");
        }
        out
    }
}

/// Serves `routes` on `addr` until the process ends; the bound address.
pub fn serve(addr: SocketAddr, metrics: Metrics, routes: Routes) -> std::io::Result<SocketAddr> {
    let server = Server::http(addr).map_err(std::io::Error::other)?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| std::io::Error::other("the API server is not on an IP socket"))?;
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let (status, body, content_type) = answer(request.url(), &metrics, &routes);
            // Never chunked (tiny_http chunks bodies over 32 KiB): the body
            // is in memory anyway, and `status`/`explain` read a plain
            // answer (a /state of 150 Services was cut into chunks).
            let mut response = Response::from_string(body)
                .with_status_code(status)
                .with_chunked_threshold(usize::MAX);
            if let Ok(h) = Header::from_bytes("Content-Type", content_type) {
                response = response.with_header(h);
            }
            let _ = request.respond(response);
        }
    });
    Ok(bound)
}

fn answer(url: &str, metrics: &Metrics, routes: &Routes) -> (u16, String, &'static str) {
    match url {
        "/metrics" if routes.metrics => (
            200,
            metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/healthz" if routes.health => match metrics.health() {
            Ok(()) => (200, "ok\n".to_string(), "text/plain"),
            Err(e) => (503, format!("{e}\n"), "text/plain"),
        },
        "/readyz" if routes.health && metrics.ready() => (200, "ready\n".to_string(), "text/plain"),
        "/readyz" if routes.health => (
            503,
            "no pass has programmed the kernel yet\n".to_string(),
            "text/plain",
        ),
        "/state" => match &routes.state {
            Some(view) => (200, view.render(metrics.ready()), "application/json"),
            None => (404, "not found\n".to_string(), "text/plain"),
        },
        _ => (404, "not found\n".to_string(), "text/plain"),
    }
}
