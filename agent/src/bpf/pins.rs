//! Every bpffs path ipwarden uses, in one place.
//!
//! ```text
//! <root>/maps/<MAP>        pinned maps (adopted by a restarted agent)
//! <root>/links/<iface>     pinned TCX links (they outlive the agent)
//! ```

use std::{
    io,
    path::{Path, PathBuf},
};

/// The pin layout under one bpffs directory (default /sys/fs/bpf/ipwarden).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn link(&self, iface: &str) -> PathBuf {
        self.links_dir().join(iface)
    }

    /// Creates the directories, and checks they are on a bpffs mount (pins
    /// anywhere else fail, or vanish with the process's mount namespace).
    pub fn create(&self) -> io::Result<()> {
        let hint = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: {e}; it must be on a bpffs mount (`mount -t bpf bpf /sys/fs/bpf`; \
                     under `ip netns exec`, /sys is remounted: use --bpf-pin-dir on a bpffs mounted elsewhere)",
                    self.root.display()
                ),
            )
        };
        mount_bpffs_if_missing(&self.root).map_err(hint)?;
        std::fs::create_dir_all(self.maps_dir()).map_err(hint)?;
        std::fs::create_dir_all(self.links_dir()).map_err(hint)?;
        let fs = nix::sys::statfs::statfs(&self.root).map_err(|e| hint(e.into()))?;
        if fs.filesystem_type() != nix::sys::statfs::BPF_FS_MAGIC {
            return Err(hint(io::Error::other("not a bpffs")));
        }
        Ok(())
    }

    /// Removes every pin (`ipwarden cleanup`). Unpinning a TCX link
    /// detaches it once nothing else holds it; unpinned maps go when their
    /// last program does. The root itself stays if it is a mount point.
    pub fn remove_all(&self) -> io::Result<()> {
        for dir in [self.maps_dir(), self.links_dir()] {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        match std::fs::remove_dir(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            // EBUSY: a bpffs mounted right there; it is empty now.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Where bpffs is normally mounted.
const BPFFS_MOUNT: &str = "/sys/fs/bpf";

/// Mounts bpffs on /sys/fs/bpf when the pins go there and nothing is
/// mounted (a fresh node, or `ip netns exec`, which remounts /sys), as
/// Cilium does, instead of failing.
fn mount_bpffs_if_missing(root: &Path) -> io::Result<()> {
    let mount = Path::new(BPFFS_MOUNT);
    if !root.starts_with(mount) {
        return Ok(());
    }
    std::fs::create_dir_all(mount)?;
    let fs = nix::sys::statfs::statfs(mount)?;
    if fs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        mount,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| match e {
        // A container without CAP_SYS_ADMIN cannot mount: it must be given
        // the host's bpffs (pins there also outlive the pod).
        nix::errno::Errno::EPERM => io::Error::new(
            io::ErrorKind::PermissionDenied,
            "no bpffs mounted on /sys/fs/bpf, and mounting one needs CAP_SYS_ADMIN: \
             mount the host's bpffs there (hostPath /sys/fs/bpf; podman -v /sys/fs/bpf:/sys/fs/bpf)",
        ),
        other => other.into(),
    })?;
    tracing::info!(path = BPFFS_MOUNT, "mounted bpffs (it was not mounted)");
    if in_a_mount_namespace_of_its_own() {
        tracing::warn!(
            path = BPFFS_MOUNT,
            "this bpffs lives only as long as this process's mount namespace (`ip netns exec` \
             makes one and remounts /sys): the pins go when the agent exits, and `ipwarden bpf dump` \
             from another process does not see them; use --bpf-pin-dir on a bpffs mounted elsewhere"
        );
    }
    Ok(())
}

/// Was this process started in a mount namespace its parent does not
/// share (`ip netns exec` execs in place after unsharing one)? A mount
/// made there goes with it. Unknown (a parent not readable) counts as no.
fn in_a_mount_namespace_of_its_own() -> bool {
    use std::os::unix::fs::MetadataExt;
    let ns = |pid: String| std::fs::metadata(format!("/proc/{pid}/ns/mnt")).map(|m| m.ino());
    let parent = nix::unistd::getppid().to_string();
    matches!((ns("self".into()), ns(parent)), (Ok(own), Ok(theirs)) if own != theirs)
}
