//! `cargo xtask vm-test -- CMD...`: runs CMD as root in a Debian kernel under
//! qemu (TCG: /dev/kvm here cannot run Debian's kernel).
//!
//! The guest boots the uncompressed vmlinux (`kernel.rs`) with a small
//! initramfs (`initramfs.rs`, `modules.rs`, `init.sh`), both cached under
//! `$CARGO_TARGET_DIR/vm/RELEASE/`. It takes the host's / read-only over 9p
//! under a tmpfs overlay, so every host binary is there and nothing the
//! guest writes survives, and runs a per-run script (`script.rs`) from a
//! second, writable 9p share that also carries the exit status back. The
//! command's output streams to our stdout through a virtio port; the kernel
//! console goes to a log that is printed only when the VM fails.
//!
//! Exit status: CMD's; else 124 when `--timeout` ran out; else 125 (the VM
//! died: boot failure, panic, or the cwd is missing in the guest).

mod cpio;
mod initramfs;
mod kernel;
mod modules;
mod qemu;
mod script;

use std::{
    collections::hash_map::DefaultHasher,
    fs,
    hash::{Hash, Hasher},
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};

use crate::process;

/// CMD ran past `--timeout`.
pub const EXIT_TIMEOUT: i32 = 124;
/// The VM stopped without reporting CMD's status (boot failure, panic, crash).
pub const EXIT_DIED: i32 = 125;

#[derive(clap::Args)]
pub struct Options {
    /// Kill the VM after this many seconds (exit status 124).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub timeout: u64,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cpus: u32,
    /// Guest memory in MiB (the writable overlay is a tmpfs inside it).
    #[arg(long, default_value_t = 2048, value_name = "MIB",
          value_parser = clap::value_parser!(u32).range(256..))]
    pub memory: u32,
    /// Keep the run directory (run.sh, console.log, qemu.log) and print its path.
    #[arg(long)]
    pub keep: bool,
    /// The command to run inside the VM.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn run(opts: &Options) -> Result<i32> {
    let kernel = kernel::find()?;
    let cache = target_dir().join("vm").join(&kernel.release);
    fs::create_dir_all(&cache).with_context(|| format!("could not create {}", cache.display()))?;
    let boot_image = vmlinux(&kernel, &cache)?;
    let initramfs = initramfs(&kernel, &cache)?;
    let run_dir = RunDir::create(&cache, opts.keep)?;
    write_run_script(&run_dir.0, &opts.command)?;

    let timeout = Duration::from_secs(opts.timeout);
    let mut vm = qemu::Vm {
        kernel: &boot_image,
        initramfs: &initramfs,
        results: &run_dir.0,
        cpus: opts.cpus,
        memory_mib: opts.memory,
    };
    let mut outcome = qemu::run(&vm, timeout)?;
    if refused_pvh(&vm, &outcome) {
        eprintln!(
            "xtask: vm-test: qemu refused the vmlinux, booting {} instead",
            kernel.image.display()
        );
        let _ = fs::remove_file(cache.join("vmlinux"));
        vm.kernel = &kernel.image;
        outcome = qemu::run(&vm, timeout)?;
    }

    let status = fs::read_to_string(run_dir.0.join("status")).unwrap_or_default();
    let code = exit_code(&status, &outcome);
    if code == EXIT_TIMEOUT || code == EXIT_DIED {
        match outcome {
            qemu::Outcome::TimedOut => {
                eprintln!("xtask: vm-test: timed out after {} s", opts.timeout)
            }
            qemu::Outcome::Exited(qemu_status) => {
                eprintln!("xtask: vm-test: the VM stopped without a status (qemu {qemu_status})")
            }
        }
        print_logs(&vm);
    }
    Ok(code)
}

/// vm-test's exit status from the status file's text and how qemu ended:
/// CMD's status when it reported one (even if powering off then hung),
/// else [`EXIT_TIMEOUT`] or [`EXIT_DIED`], never 0. CI reads a non-zero
/// status as a failed suite, so a VM that hangs or dies must not pass.
fn exit_code(status_file: &str, outcome: &qemu::Outcome) -> i32 {
    if let Ok(code) = status_file.trim().parse() {
        return code;
    }
    match outcome {
        qemu::Outcome::TimedOut => EXIT_TIMEOUT,
        qemu::Outcome::Exited(_) => EXIT_DIED,
    }
}

/// The host side of the results share, removed when the run ends unless kept.
struct RunDir(PathBuf, bool);

impl RunDir {
    fn create(cache: &Path, keep: bool) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir = cache
            .join("runs")
            .join(format!("{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
        Ok(RunDir(dir, keep))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.1 {
            eprintln!("xtask: vm-test: kept {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Stage 2 for this run: the caller's cwd, environment and command.
fn write_run_script(dir: &Path, command: &[String]) -> Result<()> {
    let cwd = std::env::current_dir().context("could not read the current directory")?;
    if cwd.starts_with("/tmp") {
        // Stage 1 then leaves the host's /tmp (through the overlay) in place.
        fs::write(dir.join("host-tmp"), "").context("could not write host-tmp")?;
    }
    let env = script::guest_env(std::env::vars_os());
    let busybox = initramfs::busybox()?;
    fs::write(
        dir.join("run.sh"),
        script::render(&cwd, &env, command, &busybox),
    )
    .context("could not write run.sh")
}

/// `CARGO_TARGET_DIR` when set (as cargo reads it), else the workspace's target/.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            std::env::current_dir()
                .map(|cwd| cwd.join(&dir))
                .unwrap_or(dir)
        }
        _ => process::workspace_root().join("target"),
    }
}

/// A fingerprint of `inputs` (files by size and mtime) and `recipe`.
fn fingerprint(inputs: &[&Path], recipe: &str) -> String {
    let mut h = DefaultHasher::new();
    recipe.hash(&mut h);
    for path in inputs {
        path.hash(&mut h);
        if let Ok(meta) = fs::metadata(path) {
            meta.len().hash(&mut h);
            meta.modified().ok().hash(&mut h);
        }
    }
    format!("{:016x}\n", h.finish())
}

/// Runs `build` unless `out`'s stamp already records `key`.
fn cached(out: &Path, key: &str, build: impl FnOnce() -> Result<()>) -> Result<()> {
    let stamp = out.with_extension("stamp");
    if out.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == key) {
        return Ok(());
    }
    build()?;
    fs::write(&stamp, key).with_context(|| format!("could not write {}", stamp.display()))
}

/// The image to boot: the cached uncompressed vmlinux, else the bzImage.
fn vmlinux(kernel: &kernel::Kernel, cache: &Path) -> Result<PathBuf> {
    let out = cache.join("vmlinux");
    let key = fingerprint(&[&kernel.image], "vmlinux 1");
    let built = cached(&out, &key, || {
        eprintln!("xtask: vm-test: unpacking {}", kernel.image.display());
        kernel::extract_vmlinux(&kernel.image, &out)
    });
    match built {
        Ok(()) => Ok(out),
        Err(e) => {
            eprintln!("xtask: vm-test: {e:#}; booting the compressed kernel (slower)");
            Ok(kernel.image.clone())
        }
    }
}

fn initramfs(kernel: &kernel::Kernel, cache: &Path) -> Result<PathBuf> {
    let out = cache.join("initramfs.cpio");
    let modules_dep = kernel.modules_dir().join("modules.dep");
    let busybox = initramfs::busybox()?;
    let key = fingerprint(
        &[&kernel.image, &modules_dep, &busybox],
        &initramfs::recipe(),
    );
    cached(&out, &key, || {
        eprintln!(
            "xtask: vm-test: building the initramfs for {}",
            kernel.release
        );
        initramfs::build(kernel, &out)
    })?;
    Ok(out)
}

/// Writes through a file of our own, then renames: a run starting meanwhile
/// sees the old file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, bytes).with_context(|| format!("could not write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("could not write {}", path.display()))
}

/// qemu exits at once, naming PVH, when it cannot boot an ELF kernel.
fn refused_pvh(vm: &qemu::Vm, outcome: &qemu::Outcome) -> bool {
    let booted_elf = vm.kernel.file_name().is_some_and(|n| n == "vmlinux");
    let failed = matches!(outcome, qemu::Outcome::Exited(s) if !s.success());
    booted_elf && failed && fs::read_to_string(vm.qemu_log()).is_ok_and(|log| log.contains("PVH"))
}

/// The guest console and qemu's own messages, for a VM that failed.
fn print_logs(vm: &qemu::Vm) {
    // Not eprintln!: a closed stderr (`| head`) must not turn into a panic.
    let mut err = std::io::stderr().lock();
    for (what, path) in [("guest console", vm.console_log()), ("qemu", vm.qemu_log())] {
        let _ = match fs::read_to_string(&path) {
            Ok(text) if text.trim().is_empty() => Ok(()),
            Ok(text) => writeln!(err, "----- {what} -----\n{}", text.trim_end()),
            Err(e) => writeln!(err, "----- {what}: could not read {}: {e}", path.display()),
        };
    }
    let _ = writeln!(err, "----- end -----");
}

#[cfg(test)]
mod tests {
    use std::{os::unix::process::ExitStatusExt, process::ExitStatus};

    use super::{exit_code, qemu::Outcome, EXIT_DIED, EXIT_TIMEOUT};

    #[test]
    fn the_guests_status_wins_and_a_hung_or_dead_vm_is_never_zero() {
        let clean = Outcome::Exited(ExitStatus::from_raw(0));
        let crashed = Outcome::Exited(ExitStatus::from_raw(1 << 8));
        assert_eq!(exit_code("0\n", &clean), 0);
        assert_eq!(exit_code("101\n", &clean), 101);
        // Powered off, then hung: the status was written first.
        assert_eq!(exit_code("0\n", &Outcome::TimedOut), 0);
        assert_eq!(exit_code("101", &Outcome::TimedOut), 101);
        // No status: a timeout, or a VM that stopped (a clean qemu exit
        // after a guest panic too).
        assert_eq!(exit_code("", &Outcome::TimedOut), EXIT_TIMEOUT);
        assert_eq!(exit_code("", &clean), EXIT_DIED);
        assert_eq!(exit_code("", &crashed), EXIT_DIED);
        assert_eq!(exit_code("garbage", &clean), EXIT_DIED);
        assert_ne!(EXIT_TIMEOUT, 0);
        assert_ne!(EXIT_DIED, 0);
    }
}
