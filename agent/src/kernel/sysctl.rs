//! The IPVS sysctls a service proxy needs, per network namespace (the
//! values kube-router sets; /proc/sys/net follows the calling thread's
//! namespace when opened).

use std::{fs, io};

/// (path under /proc/sys, value, why).
pub const IPVS_SYSCTLS: &[(&str, &str, &str)] = &[
    // Let netfilter see IPVS connections, so masquerade rules match them.
    ("net/ipv4/vs/conntrack", "1", "masquerade IPVS traffic"),
    // Drop connections to removed destinations at once instead of
    // black-holing them until they time out.
    (
        "net/ipv4/vs/expire_nodest_conn",
        "1",
        "expire connections to removed backends",
    ),
    // Persistence templates of a quiesced (weight 0) destination expire,
    // so session affinity moves off a draining endpoint.
    (
        "net/ipv4/vs/expire_quiescent_template",
        "1",
        "let affinity leave drained backends",
    ),
    // Reuse of a port by a new connection is not scheduled to the old
    // (possibly gone) destination.
    (
        "net/ipv4/vs/conn_reuse_mode",
        "0",
        "do not pin reused ports to old backends",
    ),
];

#[derive(Debug, thiserror::Error)]
#[error("sysctl {path}={value}: {source}{hint}")]
pub struct SysctlError {
    pub path: String,
    pub value: String,
    pub hint: &'static str,
    #[source]
    pub source: io::Error,
}

/// Writes `value` to /proc/sys/`path` unless it already holds it.
pub fn ensure(path: &str, value: &str) -> Result<bool, SysctlError> {
    let full = format!("/proc/sys/{path}");
    let err = |source: io::Error| SysctlError {
        path: path.to_string(),
        value: value.to_string(),
        hint: if source.kind() == io::ErrorKind::NotFound && path.starts_with("net/ipv4/vs") {
            " (no IPVS in this kernel: load the ip_vs module)"
        } else {
            ""
        },
        source,
    };
    let now = fs::read_to_string(&full).map_err(err)?;
    if now.trim() == value {
        return Ok(false);
    }
    fs::write(&full, value).map_err(err)?;
    Ok(true)
}

/// Sets every IPVS sysctl; returns the paths it changed.
pub fn ensure_ipvs() -> Result<Vec<&'static str>, SysctlError> {
    let mut changed = Vec::new();
    for (path, value, _) in IPVS_SYSCTLS {
        if ensure(path, value)? {
            changed.push(*path);
        }
    }
    Ok(changed)
}
