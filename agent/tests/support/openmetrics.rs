//! `/metrics` of a running agent read by a parser nobody here wrote:
//! Python prometheus_client's OpenMetrics parser, which is strict (it
//! refuses a missing `# EOF`, a counter without `_total`, a bad label).
//! `cargo xtask setup` installs it in its venv; $IPWARDEN_PYTHON names
//! that venv's python (`cargo xtask test` sets it).

use std::{collections::BTreeMap, io::Write, process::Stdio};

use ipwarden::lab::{http_get_from, Lab};

/// Each sample as `name{labels}` and its value, from the strict parser.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;

/// The python of the venv `cargo xtask setup` installs prometheus_client in.
fn python() -> String {
    std::env::var("IPWARDEN_PYTHON")
        .unwrap_or_else(|_| "/opt/ipwarden/kubernetes-validate/bin/python3".into())
}

/// The samples of the lab agent's `/metrics`, parsed strictly (a parse
/// error fails the test, with the text).
pub fn scrape(lab: &Lab) -> BTreeMap<String, f64> {
    let (code, text) =
        http_get_from(&lab.node, "127.0.0.1:20244".parse().unwrap(), "/metrics").unwrap();
    assert_eq!(code, 200, "{text}");
    let mut child = std::process::Command::new(python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (cargo xtask setup)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of one sample, `name{labels}` as [`scrape`] keys it.
pub fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("{key} not in {samples:#?}"))
}

/// The sum of every sample of `name`, whatever its labels; None when the
/// agent serves none.
pub fn total(samples: &BTreeMap<String, f64>, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{");
    let matching: Vec<f64> = samples
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(_, v)| *v)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}
