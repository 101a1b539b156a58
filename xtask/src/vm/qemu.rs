//! The qemu command line, and running it under a deadline.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, Result};

use crate::process;

/// One boot of the guest.
pub struct Vm<'a> {
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    /// Host directory shared writable as `results`; holds run.sh and the logs.
    pub results: &'a Path,
    pub cpus: u32,
    pub memory_mib: u32,
}

impl Vm<'_> {
    pub fn console_log(&self) -> PathBuf {
        self.results.join("console.log")
    }

    pub fn qemu_log(&self) -> PathBuf {
        self.results.join("qemu.log")
    }

    pub fn command(&self) -> Command {
        // quiet keeps the console short; tsc=reliable skips the clocksource
        // watchdog, which doubles the speed of process starts under TCG;
        // mitigations=off spares every syscall a page-table switch; acpi=noirq skips interpreting the PCI interrupt links (~0.5 s: virtio
        // uses MSI-X anyway); crypto self-tests cost ~0.3 s; expedited RCU
        // grace periods speed up module loading and netns teardown; panic=-1
        // with -no-reboot turns a guest panic into a qemu exit, and
        // softlockup_panic a CPU stuck for 2 x watchdog_thresh seconds into
        // a panic (a guest lockup then ends the run at once, not at the
        // timeout; 60 s, far above what a loaded host's TCG stalls last).
        let append = "console=ttyS0 quiet panic=-1 tsc=reliable mitigations=off acpi=noirq \
                      softlockup_panic=1 watchdog_thresh=30 \
                      cryptomgr.notests rcupdate.rcu_expedited=1 8250.nr_uarts=1 \
                      i8042.noaux i8042.nokbd i8042.nopnp";
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-M", "pc", "-cpu", "max"])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-m", &format!("{}M", self.memory_mib)])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .args(["-nic", "none"])
            .arg("-kernel")
            .arg(self.kernel)
            .arg("-initrd")
            .arg(self.initramfs)
            .args(["-append", append])
            .arg("-chardev")
            .arg(format!(
                "file,id=console,path={}",
                escape(&self.console_log())
            ))
            .args(["-serial", "chardev:console"])
            // The host's / read-only; the guest writes to a tmpfs overlay.
            .args([
                "-fsdev",
                "local,id=hostroot,path=/,security_model=none,multidevs=remap,readonly=on",
                "-device",
                "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
            ])
            .arg("-fsdev")
            .arg(format!(
                "local,id=results,path={},security_model=none",
                escape(self.results)
            ))
            .args(["-device", "virtio-9p-pci,fsdev=results,mount_tag=results"])
            // The command's output: a virtio port wired to qemu's stdout, which
            // is ours, so it streams live and never mixes with the console.
            // ioeventfd=off: with it (qemu's default) a guest write to the
            // port can stall for good when the vCPUs outnumber the host CPUs
            // free to run them (a loaded host): the guest's kick is left to
            // an event notifier that never wakes the port again, the
            // writer sleeps in wait_port_writable, and the suite looks hung
            // with no output until the timeout (lmb/vimto#27, seen with
            // two vCPUs pinned to one host CPU). Off, a kick is handled in
            // the vCPU's own exit, synchronously.
            .args([
                "-chardev",
                "stdio,id=out,signal=off",
                "-device",
                "virtio-serial-pci,ioeventfd=off",
                "-device",
                "virtserialport,chardev=out,name=ipwarden.out",
            ]);
        cmd
    }
}

/// A path as a value in qemu's `key=value,...` options, where `,,` is a comma.
fn escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

pub enum Outcome {
    Exited(ExitStatus),
    TimedOut,
}

/// Boots `vm` and waits for qemu, killing it after `timeout`.
pub fn run(vm: &Vm, timeout: Duration) -> Result<Outcome> {
    if process::which("qemu-system-x86_64").is_none() {
        anyhow::bail!("qemu-system-x86_64 not found: run cargo xtask setup");
    }
    let log = File::create(vm.qemu_log()).context("could not create qemu.log")?;
    let mut cmd = vm.command();
    // A pipe we never write to: at EOF qemu would tell the guest the port's
    // host side is gone, and the guest's writes would block.
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(log);
    let shown = process::describe(&cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let stdin = child.stdin.take();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let outcome = match rx.recv_timeout(timeout) {
        Ok(status) => Outcome::Exited(status.context("waiting for qemu failed")?),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; `pid` is our
            // child, not yet reaped (the waiter has not returned).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = rx.recv();
            Outcome::TimedOut
        }
    };
    let _ = waiter.join();
    drop(stdin);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_escapes_commas_and_boots_what_it_is_given() {
        let vm = Vm {
            kernel: Path::new("/cache/vmlinux"),
            initramfs: Path::new("/cache/initramfs.cpio"),
            results: Path::new("/target,odd/runs/1"),
            cpus: 2,
            memory_mib: 2048,
        };
        let args: Vec<String> = vm
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let after = |flag: &str| {
            let at = args.iter().position(|a| a == flag).unwrap();
            args[at + 1].clone()
        };
        assert_eq!(after("-accel"), "tcg");
        assert_eq!(after("-kernel"), "/cache/vmlinux");
        assert_eq!(after("-initrd"), "/cache/initramfs.cpio");
        assert_eq!(after("-nic"), "none");
        assert_eq!(
            after("-chardev"),
            "file,id=console,path=/target,,odd/runs/1/console.log"
        );
        assert!(args
            .contains(&"local,id=results,path=/target,,odd/runs/1,security_model=none".to_owned()));
        assert!(after("-append").contains("console=ttyS0"));
    }
}
