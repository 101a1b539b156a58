//! `cargo xtask setup`: an idempotent set-up of a fresh Debian 12 machine.
//!
//! Each step checks first and says what it found or did; a step that fails
//! stops the set-up with the reason and the command that failed.

use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::{
    build_ebpf::{home_cargo_bin, llvm_major_of_linker, llvm_major_of_rustc},
    process::{self, require_root, workspace_root},
};

/// Debian packages the build, the tests, the demo and the VM use.
const APT_PACKAGES: &[&str] = &[
    // bpf-linker links against LLVM 22 (same major as rustc 1.95).
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // Test oracles and kernel tooling.
    "bpftool",
    "ipset",
    "iptables",
    // nft -a: rule handles, which show whether a rule was rewritten.
    "nftables",
    "ipvsadm",
    "iproute2",
    "kmod",
    // The IPVS test VM: a 6.1 kernel with IPVS as modules, qemu (TCG),
    // a static busybox for the initramfs, xz to unpack the kernel, cpio
    // (the oracle of the initramfs writer's test).
    "qemu-system-x86",
    "linux-image-amd64",
    "busybox-static",
    "xz-utils",
    "cpio",
    // The witness that a foreign set is never listed (the agent's netlink
    // requests, tests/store_netns.rs).
    "strace",
    // Benchmarks (cargo xtask bench): throughput through a veth pair.
    "iperf3",
    // The OCI image (cargo xtask image): a Debian root filesystem without a
    // registry, committed with umoci; podman runs it in the image test
    // (with runc: crun refuses a host whose cgroups are hybrid v1/v2).
    "mmdebstrap",
    "umoci",
    "binutils",
    "podman",
    "runc",
    // The venv that holds kubernetes-validate (deploy/ manifests test).
    "python3-venv",
];

/// kubernetes-validate (PyPI) checks deploy/ against the OpenAPI schema of
/// the Kubernetes that k8s-openapi targets (1.34); 1.37.0 ships the
/// schemas of 1.34.0. In a venv of its own: Debian's python is
/// externally managed (PEP 668).
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
pub const KUBERNETES_VALIDATE_VENV: &str = "/opt/ipwarden/kubernetes-validate";

const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM major of the pinned rustc and of the llvm-22-dev package.
const LLVM_MAJOR: u32 = 22;

#[derive(clap::Args)]
pub struct Options {}

pub fn run(_: &Options) -> Result<()> {
    require_root("setup")?;
    apt_packages()?;
    rust_src()?;
    bpf_linker()?;
    kubernetes_validate()?;
    prometheus_client()?;
    bpffs()?;
    println!("setup: done");
    Ok(())
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        println!("setup: apt packages: all {} present", APT_PACKAGES.len());
        return Ok(());
    }
    println!("setup: apt packages: installing {}", missing.join(" "));
    process::run(Command::new("apt-get").arg("update").arg("-q"))
        .context("apt-get update failed: is a Debian mirror reachable?")?;
    process::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("could not install {}", missing.join(" ")))?;
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

/// rust-src of the pinned toolchain, for `-Z build-std=core`. rustup reads
/// rust-toolchain.toml from the workspace, so it never picks another
/// toolchain (a newer one would bring LLVM 23).
fn rust_src() -> Result<()> {
    let root = workspace_root();
    let sysroot = process::output(
        Command::new("rustc")
            .args(["--print", "sysroot"])
            .current_dir(&root)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC"),
    )?;
    let src = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if src.is_dir() {
        println!("setup: rust-src: present");
        return Ok(());
    }
    println!("setup: rust-src: installing");
    process::run(
        Command::new("rustup")
            .args(["component", "add", "rust-src"])
            .current_dir(&root)
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
    .context("rustup could not add rust-src")
}

/// bpf-linker 0.13.0 against the system LLVM 22, unless one is there already.
fn bpf_linker() -> Result<()> {
    let rustc_llvm = llvm_major_of_rustc(&process::output(
        Command::new("rustc")
            .arg("-vV")
            .current_dir(workspace_root())
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC"),
    )?)
    .context("rustc -vV printed no LLVM version")?;
    if rustc_llvm != LLVM_MAJOR {
        bail!("the pinned rustc uses LLVM {rustc_llvm}, but set-up installs LLVM {LLVM_MAJOR}");
    }
    if let Some(linker) = process::which("bpf-linker").or_else(|| home_cargo_bin("bpf-linker")) {
        let version = process::output(Command::new(&linker).arg("--version")).unwrap_or_default();
        let llvm = llvm_major_of_linker(&linker).ok();
        if version.contains(BPF_LINKER_VERSION) && llvm == Some(LLVM_MAJOR) {
            println!("setup: bpf-linker: {BPF_LINKER_VERSION} with LLVM {LLVM_MAJOR} present");
            return Ok(());
        }
        println!(
            "setup: bpf-linker: {} has LLVM {llvm:?} ({}), rebuilding",
            linker.display(),
            version.trim()
        );
    } else {
        println!("setup: bpf-linker: installing {BPF_LINKER_VERSION} for LLVM {LLVM_MAJOR}");
    }
    process::run(
        Command::new("cargo")
            .args(["install", "--locked", "--force", "bpf-linker"])
            .args(["--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            // Build it with the pinned toolchain, whatever the caller's.
            .current_dir(workspace_root())
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR"),
    )
    .context("cargo install bpf-linker failed (llvm-22-dev and libpolly-22-dev must be installed)")
}

/// kubernetes-validate at the pinned version in its venv, unless there.
fn kubernetes_validate() -> Result<()> {
    let venv = Path::new(KUBERNETES_VALIDATE_VENV);
    let python = venv.join("bin/python3");
    let installed = python.is_file()
        && Command::new(&python)
            .args(["-m", "pip", "show", "kubernetes-validate"])
            .output()
            .is_ok_and(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .any(|l| l == format!("Version: {KUBERNETES_VALIDATE_VERSION}"))
            });
    if installed {
        println!("setup: kubernetes-validate: {KUBERNETES_VALIDATE_VERSION} present in {KUBERNETES_VALIDATE_VENV}");
        return Ok(());
    }
    println!("setup: kubernetes-validate: installing {KUBERNETES_VALIDATE_VERSION} in {KUBERNETES_VALIDATE_VENV}");
    if !python.is_file() {
        // Debian's python3 (python3-venv), whatever else is first on PATH.
        process::run(
            Command::new("/usr/bin/python3")
                .args(["-m", "venv"])
                .arg(venv),
        )
        .context("could not create the kubernetes-validate venv (python3-venv)")?;
    }
    process::run(
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .arg(format!(
                "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
            )),
    )
    .context("pip could not install kubernetes-validate: is PyPI reachable?")
}

/// prometheus_client, whose strict OpenMetrics parser reads the agent's
/// /metrics in tests/metrics_netns.rs, in the same venv.
const PROMETHEUS_CLIENT_VERSION: &str = "0.21.1";

fn prometheus_client() -> Result<()> {
    let python = Path::new(KUBERNETES_VALIDATE_VENV).join("bin/python3");
    println!("setup: prometheus-client {PROMETHEUS_CLIENT_VERSION} in {KUBERNETES_VALIDATE_VENV}");
    process::run(
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .arg(format!("prometheus-client=={PROMETHEUS_CLIENT_VERSION}")),
    )
    .context("pip could not install prometheus-client: is PyPI reachable?")
}

/// bpffs at /sys/fs/bpf, where the agent pins its maps and links.
fn bpffs() -> Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        println!("setup: bpffs: mounted at /sys/fs/bpf");
        return Ok(());
    }
    println!("setup: bpffs: mounting at /sys/fs/bpf");
    process::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("could not mount bpffs at /sys/fs/bpf")
}
