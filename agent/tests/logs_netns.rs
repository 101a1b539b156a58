//! The agent's log as a pipeline reads it: `ipwarden run --once` (the
//! policy controller, on the host's kernel in a throw-away namespace) with
//! stderr piped, as `kubectl logs` and a file get it.

use std::path::Path;

use ipwarden::{
    lab::{Lab, CLUSTER},
    netns::privileged,
};

const AGENT: &str = env!("CARGO_BIN_EXE_ipwarden");

/// stderr of one `run --once` with `extra` flags, at level info.
fn log_of(lab: &Lab, extra: &[&str]) -> Vec<u8> {
    let out = lab
        .node
        .command(AGENT)
        .args(["run", "--once", "--node-name", "node-a"])
        .args(["--run-service-proxy=false", "--bpf-mode", "off"])
        .arg("--manifests")
        .arg(Path::new(&lab.manifests))
        .args(extra)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stderr.is_empty(), "nothing logged at info");
    out.stderr
}

#[test]
fn piped_logs_carry_no_colour_and_json_lines_parse() {
    if !privileged("piped_logs_carry_no_colour_and_json_lines_parse") {
        return;
    }
    let lab = Lab::new(CLUSTER).unwrap();
    let text = log_of(&lab, &[]);
    assert!(
        !text.contains(&0x1b),
        "an ESC byte in a piped log: {}",
        String::from_utf8_lossy(&text)
    );

    let json = String::from_utf8(log_of(&lab, &["--log-format", "json"])).unwrap();
    for line in json.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["level"].is_string(), "{line}");
        assert!(v["message"].is_string(), "the fields are fields: {line}");
        assert!(v["timestamp"].is_string(), "{line}");
    }
    assert!(!json.contains('\u{1b}'), "{json}");
}
