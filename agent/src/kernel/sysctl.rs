//! The IPVS sysctls a service proxy needs, per network namespace (the
//! values kube-router sets; /proc/sys/net follows the calling thread's
//! namespace when opened).
//!
//! A container that is not privileged sees /proc/sys read-only: there the
//! host's /proc/sys/net is mounted elsewhere (a hostPath, as Cilium does)
//! and named with --sysctl-dir.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// Where the kernel shows its sysctls.
pub(crate) const DEFAULT_DIR: &str = "/proc/sys";

/// (path under /proc/sys, value).
pub(crate) const IPVS_SYSCTLS: &[(&str, &str)] = &[
    // Let netfilter see IPVS connections, so masquerade rules match them.
    ("net/ipv4/vs/conntrack", "1"),
    // Drop connections to removed destinations at once instead of
    // black-holing them until they time out.
    ("net/ipv4/vs/expire_nodest_conn", "1"),
    // Persistence templates of a quiesced (weight 0) destination expire,
    // so session affinity moves off a draining endpoint.
    ("net/ipv4/vs/expire_quiescent_template", "1"),
    // Reuse of a port by a new connection is not scheduled to the old
    // (possibly gone) destination.
    ("net/ipv4/vs/conn_reuse_mode", "0"),
];

#[derive(Debug, thiserror::Error)]
#[error("sysctl {}={value}: {source}{hint}", path.display())]
pub struct SysctlError {
    pub path: PathBuf,
    pub value: String,
    pub hint: &'static str,
    #[source]
    pub source: io::Error,
}

/// Writes `value` to `dir`/`path` unless it already holds it.
pub(crate) fn ensure(dir: &Path, path: &str, value: &str) -> Result<bool, SysctlError> {
    let full = dir.join(path);
    let err = |source: io::Error| SysctlError {
        path: full.clone(),
        value: value.to_string(),
        hint: hint(&source, path),
        source,
    };
    let now = fs::read_to_string(&full).map_err(err)?;
    if now.trim() == value {
        return Ok(false);
    }
    fs::write(&full, value).map_err(err)?;
    Ok(true)
}

fn hint(error: &io::Error, path: &str) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound if path.starts_with("net/ipv4/vs") => {
            " (no IPVS in this kernel: load the ip_vs module)"
        }
        // EROFS: /proc/sys of a container that is not privileged.
        io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => {
            " (read-only in a container: mount the host's /proc/sys/net writable, \
             e.g. at /host/proc/sys/net, and pass --sysctl-dir=/host/proc/sys)"
        }
        _ => "",
    }
}

/// Sets every IPVS sysctl under `dir`; returns the paths it changed.
pub(crate) fn ensure_ipvs(dir: &Path) -> Result<Vec<&'static str>, SysctlError> {
    let mut changed = Vec::new();
    for (path, value) in IPVS_SYSCTLS {
        if ensure(dir, path, value)? {
            changed.push(*path);
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// --sysctl-dir: the values are read and written under it, and only
    /// when they differ.
    #[test]
    fn ensure_writes_under_the_given_dir_only_what_differs() {
        let dir = std::env::temp_dir().join(format!("ipwarden-sysctl-{}", std::process::id()));
        let vs = dir.join("net/ipv4/vs");
        fs::create_dir_all(&vs).unwrap();
        for (path, _) in IPVS_SYSCTLS {
            fs::write(dir.join(path), "0\n").unwrap();
        }
        let changed = ensure_ipvs(&dir).unwrap();
        assert_eq!(
            changed,
            [
                "net/ipv4/vs/conntrack",
                "net/ipv4/vs/expire_nodest_conn",
                "net/ipv4/vs/expire_quiescent_template"
            ]
        );
        assert_eq!(fs::read_to_string(vs.join("conntrack")).unwrap(), "1");
        assert!(ensure_ipvs(&dir).unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_ipvs_sysctl_names_its_path_and_the_module() {
        let dir = std::env::temp_dir().join(format!("ipwarden-sysctl-none-{}", std::process::id()));
        let err = ensure_ipvs(&dir).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("sysctl {}/net/ipv4/vs/conntrack=1", dir.display())),
            "{err}"
        );
        assert!(err.contains("load the ip_vs module"), "{err}");
    }
}
