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

/// The rate estimator's switch. Up to Linux 6.1 one timer per namespace
/// walks every service's and destination's counters every 2 s, in softirq
/// and under the lock a service add or delete takes: at 50,000 Services
/// (200,000 counters) over 200 ms on a 104-CPU machine (the kernel patch
/// that added the switch), 100-550 ms in the bench's VM, and a sync that
/// meets it waits it out. Off, `ipvsadm --stats` and `--rate` stop moving;
/// the agent reads neither. Kernels before 5.16 have no switch.
pub(crate) const RUN_ESTIMATION: &str = "net/ipv4/vs/run_estimation";

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

/// Sets every IPVS sysctl under `dir`, and the rate estimator on or off
/// where `estimation` asks it (None: the node's setting is left alone);
/// returns the paths it changed.
pub(crate) fn ensure_ipvs(
    dir: &Path,
    estimation: Option<bool>,
) -> Result<Vec<&'static str>, SysctlError> {
    let mut changed = Vec::new();
    for (path, value) in IPVS_SYSCTLS {
        if ensure(dir, path, value)? {
            changed.push(*path);
        }
    }
    if let Some(on) = estimation {
        if switch_estimation(dir, on)? {
            changed.push(RUN_ESTIMATION);
        }
    }
    Ok(changed)
}

/// Writes the estimator's switch; a kernel without one (before 5.16) is
/// told in the log, as nothing can be switched there.
fn switch_estimation(dir: &Path, on: bool) -> Result<bool, SysctlError> {
    if !dir.join(RUN_ESTIMATION).exists() {
        tracing::warn!(
            sysctl = RUN_ESTIMATION,
            "this kernel has no IPVS rate estimator switch (Linux 5.16 and later): left as it runs"
        );
        return Ok(false);
    }
    ensure(dir, RUN_ESTIMATION, if on { "1" } else { "0" })
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
        let changed = ensure_ipvs(&dir, Some(false)).unwrap();
        assert_eq!(
            changed,
            [
                "net/ipv4/vs/conntrack",
                "net/ipv4/vs/expire_nodest_conn",
                "net/ipv4/vs/expire_quiescent_template"
            ]
        );
        assert_eq!(fs::read_to_string(vs.join("conntrack")).unwrap(), "1");
        assert!(ensure_ipvs(&dir, Some(false)).unwrap().is_empty());
        // A kernel without the estimator's switch: nothing written for it.
        assert!(!dir.join(RUN_ESTIMATION).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The estimator off or on as asked, where the kernel has its switch;
    /// not asked, the node's setting stays.
    #[test]
    fn the_rate_estimator_is_switched_as_asked() {
        let dir = std::env::temp_dir().join(format!("ipwarden-sysctl-est-{}", std::process::id()));
        fs::create_dir_all(dir.join("net/ipv4/vs")).unwrap();
        for (path, value) in IPVS_SYSCTLS {
            fs::write(dir.join(path), value).unwrap();
        }
        let switch = dir.join(RUN_ESTIMATION);
        fs::write(&switch, "1\n").unwrap();
        assert_eq!(ensure_ipvs(&dir, Some(false)).unwrap(), [RUN_ESTIMATION]);
        assert_eq!(fs::read_to_string(&switch).unwrap(), "0");
        assert!(ensure_ipvs(&dir, Some(false)).unwrap().is_empty());
        assert!(ensure_ipvs(&dir, None).unwrap().is_empty());
        assert_eq!(fs::read_to_string(&switch).unwrap(), "0");
        assert_eq!(ensure_ipvs(&dir, Some(true)).unwrap(), [RUN_ESTIMATION]);
        assert_eq!(fs::read_to_string(&switch).unwrap(), "1");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_ipvs_sysctl_names_its_path_and_the_module() {
        let dir = std::env::temp_dir().join(format!("ipwarden-sysctl-none-{}", std::process::id()));
        let err = ensure_ipvs(&dir, None).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("sysctl {}/net/ipv4/vs/conntrack=1", dir.display())),
            "{err}"
        );
        assert!(err.contains("load the ip_vs module"), "{err}");
    }
}
