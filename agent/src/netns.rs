//! Named network namespaces, for tests, the demo and benchmarks: ipsets,
//! iptables, IPVS and tc are all per network namespace, so work done inside
//! one never touches the host's rules.

use std::{
    fs::File,
    io,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{setns, CloneFlags};

/// A network namespace made with `ip netns add`, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    handle: File,
}

impl NetNs {
    /// Creates `<prefix>-<pid>-<n>`, unique within this process.
    pub fn new(prefix: &str) -> io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let handle = File::open(format!("/run/netns/{name}"))?;
        let ns = Self { name, handle };
        // Loopback is down in a new namespace; most tests want it.
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a thread that has entered this namespace. Threads and
    /// sockets `f` creates live in the namespace too.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.handle, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A command that runs inside this namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// `ip -n <ns> ARGS...`, failing with ip's stderr.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Joins this namespace to `peer` with a veth pair, `local` here and
    /// `remote` there, each up and given its addresses (CIDR notation; IPv6
    /// ones skip duplicate address detection so they are usable at once).
    pub fn veth_to(
        &self,
        peer: &NetNs,
        local: (&str, &[&str]),
        remote: (&str, &[&str]),
    ) -> io::Result<()> {
        self.ip(&[
            "link",
            "add",
            local.0,
            "type",
            "veth",
            "peer",
            "name",
            remote.0,
            "netns",
            peer.name(),
        ])?;
        for (ns, (dev, addrs)) in [(self, local), (peer, remote)] {
            for addr in addrs {
                let mut args = vec!["addr", "add", addr, "dev", dev];
                if addr.contains(':') {
                    args.push("nodad");
                }
                ns.ip(&args)?;
            }
            ns.ip(&["link", "set", dev, "up"])?;
        }
        Ok(())
    }

    /// Runs `program args` inside the namespace and returns its stdout.
    pub fn output(&self, program: &str, args: &[&str]) -> io::Result<String> {
        checked_output(self.command(program).args(args))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Never panic in drop (a failing test may be unwinding already).
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not delete netns {}: {e}", self.name);
        }
    }
}

fn ip(args: &[&str]) -> io::Result<()> {
    checked_output(Command::new("ip").args(args)).map(drop)
}

/// Runs `cmd`; a non-zero exit becomes an error carrying the command and its stderr.
pub fn checked_output(cmd: &mut Command) -> io::Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A bpffs of its own, mounted at a fresh directory under /run and
/// unmounted on drop: pins for one test, visible to processes started with
/// `ip netns exec` (which remounts /sys, hiding /sys/fs/bpf). Named like a
/// [`NetNs`] (prefix, pid, counter), so parallel tests and concurrent runs
/// never share one.
#[derive(Debug)]
pub struct BpfFs {
    path: std::path::PathBuf,
}

impl BpfFs {
    pub fn new(prefix: &str) -> io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::path::PathBuf::from(format!(
            "/run/ipwarden-test-bpffs/{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)?;
        checked_output(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&path))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        // Lazy: a pinned link or map still open elsewhere must not fail us.
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Gate for privileged tests. As root they always run. Without root they
/// skip with a message, unless IPWARDEN_PRIVILEGED=1 demands them (then the
/// test fails), so `cargo xtask test` can never pass by skipping.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("IPWARDEN_PRIVILEGED").is_some_and(|v| v == "1") {
        panic!("{test}: needs root, and IPWARDEN_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("{test}: skipped, needs root (set IPWARDEN_PRIVILEGED=1 to make this an error)");
    false
}
