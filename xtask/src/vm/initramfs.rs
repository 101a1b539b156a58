//! The initramfs: static busybox, stage 1 (`init.sh`) and the modules
//! (`modules.rs`), written as a cpio archive.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use super::{cpio::Archive, kernel, modules};
use crate::process;

/// The static busybox that runs stage 1 (and powers the guest off in stage 2).
pub fn busybox() -> Result<PathBuf> {
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| p.is_file())
        .or_else(|| process::which("busybox"))
        .context("busybox not found: run cargo xtask setup (package busybox-static)")?;
    Ok(path)
}

/// Applets stage 1 calls by name (the others help when debugging with --keep).
const APPLETS: &[&str] = &[
    "sh",
    "mount",
    "modprobe",
    "insmod",
    "lsmod",
    "mkdir",
    "switch_root",
    "ip",
    "usleep",
    "poweroff",
    "cat",
    "ls",
];

/// Writes the initramfs for `kernel` to `out`.
pub fn build(kernel: &kernel::Kernel, out: &Path) -> Result<()> {
    let busybox_path = busybox()?;
    let busybox = fs::read(&busybox_path)
        .with_context(|| format!("could not read {}", busybox_path.display()))?;
    if !kernel::is_static_elf(&busybox) {
        bail!(
            "{} is dynamically linked: install busybox-static (cargo xtask setup)",
            busybox_path.display()
        );
    }
    let (boot, test) = modules::resolve(&kernel.release)?;

    let mut cpio = Archive::new();
    for dir in [
        "bin",
        "dev",
        "etc",
        "etc/modprobe.d",
        "proc",
        "lower",
        "overlay",
        "root",
    ] {
        cpio.dir(dir);
    }
    // The kernel opens /dev/console for init before anything is mounted.
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.file("bin/busybox", 0o755, &busybox);
    for applet in APPLETS {
        cpio.symlink(&format!("bin/{applet}"), "busybox");
    }
    cpio.file("init", 0o755, include_bytes!("init.sh"));

    // busybox modprobe finds modules through modules.dep; the order comes
    // from the lists, so no dependencies are recorded.
    let prefix = format!("{}/", kernel.modules_dir().display());
    let mut dirs = BTreeSet::new();
    let (mut modules_dep, mut options) = (String::new(), String::new());
    let mut lists = [String::new(), String::new()];
    for (list, modules) in lists.iter_mut().zip([&boot, &test]) {
        for module in modules {
            let relative = module
                .path
                .strip_prefix(&prefix)
                .with_context(|| format!("module {} is outside {prefix}", module.path))?;
            let (relative, name) = modules::uncompressed_name(relative);
            let inside = format!("{}{relative}", prefix.trim_start_matches('/'));
            // Parent directories first, each once.
            let mut parent = PathBuf::new();
            for part in Path::new(&inside).parent().into_iter().flat_map(Path::iter) {
                parent.push(part);
                if dirs.insert(parent.clone()) {
                    cpio.dir(&parent.to_string_lossy());
                }
            }
            let data = modules::bytes(Path::new(&module.path))?;
            cpio.file(&inside, 0o644, modules::strip_signature(&data));
            modules_dep.push_str(&format!("{relative}:\n"));
            list.push_str(&format!("{name} "));
            if !module.options.is_empty() {
                options.push_str(&format!("options {name} {}\n", module.options));
            }
        }
        list.push('\n');
    }
    cpio.file(
        &format!("{}modules.dep", prefix.trim_start_matches('/')),
        0o644,
        modules_dep.as_bytes(),
    );
    cpio.file("etc/modprobe.d/ipwarden.conf", 0o644, options.as_bytes());
    cpio.file("modules.boot", 0o644, lists[0].as_bytes());
    cpio.file("modules.test", 0o644, lists[1].as_bytes());

    super::write_atomically(out, &cpio.finish())
}

/// What the initramfs depends on besides the kernel and busybox: its
/// recipe, so that editing the lists, the init script or this code rebuilds it.
pub fn recipe() -> String {
    [
        include_str!("init.sh"),
        include_str!("initramfs.rs"),
        include_str!("modules.rs"),
    ]
    .concat()
}
