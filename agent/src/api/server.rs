//! A small HTTP server on its own thread (tiny_http): the agent's loop is
//! synchronous, and three read-only endpoints need no async runtime.

use std::net::SocketAddr;

use tiny_http::{Header, Response, Server};

use super::Metrics;
use crate::reconcile::board::Board;

/// Serves /metrics, /healthz, /readyz and (with a board) /state on `addr`
/// until the process ends.
pub fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    board: Option<Board>,
) -> std::io::Result<SocketAddr> {
    let server = Server::http(addr).map_err(std::io::Error::other)?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| std::io::Error::other("the API server is not on an IP socket"))?;
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let (status, body, content_type) = match request.url() {
                "/metrics" => (
                    200,
                    metrics.encode(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                "/healthz" => match metrics.health() {
                    Ok(()) => (200, "ok\n".to_string(), "text/plain"),
                    Err(e) => (503, format!("{e}\n"), "text/plain"),
                },
                "/readyz" if metrics.ready() => (200, "ready\n".to_string(), "text/plain"),
                "/readyz" => (
                    503,
                    "no pass has programmed the kernel yet\n".to_string(),
                    "text/plain",
                ),
                "/state" => match &board {
                    Some(b) => (
                        200,
                        super::state::to_json(&b.read()).to_string(),
                        "application/json",
                    ),
                    None => (404, "no state in this mode\n".to_string(), "text/plain"),
                },
                _ => (404, "not found\n".to_string(), "text/plain"),
            };
            let mut response = Response::from_string(body).with_status_code(status);
            if let Ok(h) = Header::from_bytes("Content-Type", content_type) {
                response = response.with_header(h);
            }
            let _ = request.respond(response);
        }
    });
    Ok(bound)
}
