//! Where one partial sync's time goes: the service controller's summary in
//! the agent's `/state` names each step's duration ("steps: addresses
//! 0.1 ms, snapshot 2.3 ms, prepare ..."); read after each of a few
//! changes, the median per step.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

/// The steps of the last partial sync of the service controller, from
/// `/state` on 127.0.0.1:20246. Call it from inside the node namespace.
pub fn last_partial() -> Vec<(String, Duration)> {
    last_steps("last_partial")
}

/// The steps of the service controller's `record` ("last_full" or
/// "last_partial") in `/state`. Call it from inside the node namespace.
pub fn last_steps(record: &str) -> Vec<(String, Duration)> {
    controller_steps("services", record)
}

/// The steps of `controller`'s `record` in `/state`, as
/// [`last_steps`].
pub fn controller_steps(controller: &str, record: &str) -> Vec<(String, Duration)> {
    let mut s = TcpStream::connect("127.0.0.1:20246").expect("connecting to the agent");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET /state HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
    )
    .expect("GET /state");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("reading /state");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_string()
    };
    let state: serde_json::Value = serde_json::from_str(&body).expect("/state is JSON");
    let summary = state["controllers"][controller][record]["summary"]
        .as_str()
        .unwrap_or_default();
    parse(summary)
}

/// The body of a chunked HTTP/1.1 response.
fn unchunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// "…; steps: a 1.0 ms, b 0.2 ms" to [(a, 1 ms), (b, 0.2 ms)].
fn parse(summary: &str) -> Vec<(String, Duration)> {
    let Some((_, steps)) = summary.rsplit_once("steps: ") else {
        return Vec::new();
    };
    steps
        .split(", ")
        .filter_map(|step| {
            let (name, ms) = step.trim().strip_suffix(" ms")?.rsplit_once(' ')?;
            let ms: f64 = ms.parse().ok()?;
            Some((name.to_string(), Duration::from_secs_f64(ms / 1e3)))
        })
        .collect()
}

/// The median of each step over `samples`, in the order the steps ran.
pub fn medians(samples: &[Vec<(String, Duration)>]) -> Vec<(String, Duration)> {
    let mut order = Vec::new();
    let mut by_step: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for sample in samples {
        for (name, d) in sample {
            if !by_step.contains_key(name) {
                order.push(name.clone());
            }
            by_step.entry(name.clone()).or_default().push(*d);
        }
    }
    order
        .into_iter()
        .map(|name| {
            let mut ds = by_step.remove(&name).unwrap_or_default();
            ds.sort();
            let median = ds.get(ds.len() / 2).copied().unwrap_or_default();
            (name, median)
        })
        .collect()
}
