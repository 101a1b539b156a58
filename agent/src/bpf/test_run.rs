//! `BPF_PROG_TEST_RUN` for the classifier: the program run by the kernel
//! on a frame of our making, without a network (aya 0.14 has no wrapper).
//! For tests of the parser and for the benchmark's per-frame costs.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// `struct bpf_attr` for BPF_PROG_TEST_RUN (union member `test`), padded.
#[repr(C)]
#[derive(Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: [u32; 9],
}

/// What one test run returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (TC_ACT_OK is 0).
    pub retval: u32,
    /// skb->mark after the last run.
    pub mark: u32,
    /// The kernel's average time per run (ktime, the loop included).
    pub duration_ns: u32,
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised bpf_attr variant of the size
    // passed; the kernel reads and writes only within it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Runs the sched_cls program `prog` `repeat` times on `frame` (an
/// Ethernet frame); skb->mark starts at 0 on each run.
pub fn run(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> io::Result<TestRun> {
    let mut out = vec![0u8; frame.len() + 256];
    // struct __sk_buff: len, pkt_type, mark, ...; 256 bytes is room for
    // every kernel's version of it (the kernel copies what it has).
    let mut ctx_out = [0u32; 64];
    let mut attr = TestAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ctx_size_out: std::mem::size_of_val(&ctx_out) as u32,
        ctx_out: ctx_out.as_mut_ptr() as u64,
        ..TestAttr::default()
    };
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(TestRun {
        retval: attr.retval,
        mark: ctx_out[2],
        duration_ns: attr.duration,
    })
}

/// `struct bpf_attr` for BPF_PROG_LOAD, the fields used here, padded.
#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    _rest: [u64; 16],
}

/// A sched_cls program that only returns TC_ACT_OK (`r0 = 0; exit`): what
/// the kernel's statistics report for it is their own cost, the floor
/// under every program's figure.
pub fn empty_program() -> io::Result<OwnedFd> {
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = b"GPL\0";
    let mut attr = LoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..LoadAttr::default()
    };
    let fd = sys_bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: BPF_PROG_LOAD returned a new file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[repr(C)]
struct InfoAttr {
    fd: u32,
    info_len: u32,
    info: u64,
}

/// (run_time_ns, run_cnt) of any program, from `struct bpf_prog_info`
/// (UAPI: its fields only ever get appended, so the offsets hold).
pub fn stats(prog: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let mut info = [0u64; 40];
    let mut attr = InfoAttr {
        fd: prog.as_fd().as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // run_time_ns at byte 192, run_cnt at 200.
    Ok((info[24], info[25]))
}
