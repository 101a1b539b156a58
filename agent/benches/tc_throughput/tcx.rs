//! An empty program on TCX, and the BPF statistics sysctl.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
    _rest: [u64; 8],
}

/// Attaches `prog` to `iface`'s TCX ingress in the calling thread's
/// namespace (aya cannot take a program it did not load); the link fd
/// holds the attachment.
pub fn attach_tcx(prog: BorrowedFd<'_>, iface: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(iface).expect("name");
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: 46, // BPF_TCX_INGRESS
        ..LinkCreate::default()
    };
    // SAFETY: a valid bpf_attr for BPF_LINK_CREATE (28) of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            28,
            std::ptr::from_mut(&mut attr),
            size_of::<LinkCreate>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: BPF_LINK_CREATE returned a new fd we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub fn bpf_stats_sysctl() -> String {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}
