//! IPVS read through the old getsockopt interface (what `ipvsadm` used
//! before netlink): one call returns every IPv4 service of the namespace
//! with its destination count, one call per service its destinations.
//! Each call walks the table once under the IPVS mutex: no dump resumed
//! by position, no page-by-page restart as `/proc/net/ip_vs` has. Only
//! AF_INET services are shown. Bench-only: it prices this read against
//! the text and the netlink dumps.

// The kernel's layouts, every field in place whether read or not.
#![allow(dead_code)]

use std::{io, mem::size_of};

const IP_VS_BASE_CTL: libc::c_int = 64 + 1024 + 64;
const IP_VS_SO_GET_INFO: libc::c_int = IP_VS_BASE_CTL + 1;
const IP_VS_SO_GET_SERVICES: libc::c_int = IP_VS_BASE_CTL + 2;
const IP_VS_SO_GET_DESTS: libc::c_int = IP_VS_BASE_CTL + 4;

/// `struct ip_vs_stats_user`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct StatsUser {
    conns: u32,
    inpkts: u32,
    outpkts: u32,
    inbytes: u64,
    outbytes: u64,
    cps: u32,
    inpps: u32,
    outpps: u32,
    inbps: u32,
    outbps: u32,
}

/// `struct ip_vs_getinfo`.
#[repr(C)]
#[derive(Default)]
struct GetInfo {
    version: u32,
    size: u32,
    num_services: u32,
}

/// `struct ip_vs_service_entry`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ServiceEntry {
    pub protocol: u16,
    pub addr: u32,
    pub port: u16,
    pub fwmark: u32,
    pub sched_name: [u8; 16],
    pub flags: u32,
    pub timeout: u32,
    pub netmask: u32,
    pub num_dests: u32,
    stats: StatsUser,
}

/// `struct ip_vs_get_services` without its table.
#[repr(C)]
struct GetServices {
    num_services: u32,
    entrytable: [ServiceEntry; 0],
}

/// `struct ip_vs_dest_entry`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct DestEntry {
    pub addr: u32,
    pub port: u16,
    pub conn_flags: u32,
    pub weight: i32,
    pub u_threshold: u32,
    pub l_threshold: u32,
    activeconns: u32,
    inactconns: u32,
    persistconns: u32,
    stats: StatsUser,
}

/// `struct ip_vs_get_dests` without its table.
#[repr(C)]
struct GetDests {
    protocol: u16,
    addr: u32,
    port: u16,
    fwmark: u32,
    num_dests: u32,
    entrytable: [DestEntry; 0],
}

/// A raw IPv4 socket to ask IPVS on, in the calling thread's namespace.
pub struct Sockopt(libc::c_int);

impl Drop for Sockopt {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

impl Sockopt {
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(fd))
    }

    /// getsockopt into `buf`, whose length the kernel checks exactly.
    fn get(&self, opt: libc::c_int, buf: &mut [u64]) -> io::Result<()> {
        let mut len = std::mem::size_of_val(buf) as libc::socklen_t;
        // SAFETY: buf is valid for len bytes, and 8-aligned for the structs.
        let r = unsafe {
            libc::getsockopt(
                self.0,
                libc::IPPROTO_IP,
                opt,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Every IPv4 service of the namespace, with its destination count.
    pub fn services(&self) -> io::Result<Vec<ServiceEntry>> {
        let mut info = [0u64; size_of::<GetInfo>().div_ceil(8)];
        self.get(IP_VS_SO_GET_INFO, &mut info)?;
        // SAFETY: the kernel filled a GetInfo at the buffer's start.
        let n = unsafe { (*info.as_ptr().cast::<GetInfo>()).num_services } as usize;
        let bytes = size_of::<GetServices>() + n * size_of::<ServiceEntry>();
        let mut buf = vec![0u64; bytes / 8];
        // SAFETY: buf holds a GetServices header.
        unsafe { (*buf.as_mut_ptr().cast::<GetServices>()).num_services = n as u32 };
        self.get(IP_VS_SO_GET_SERVICES, &mut buf)?;
        // SAFETY: n entries follow the header; unfilled ones stay zero
        // (an IPv6 service is counted but not shown).
        let table = unsafe {
            let head = buf.as_ptr().cast::<GetServices>();
            std::slice::from_raw_parts((*head).entrytable.as_ptr(), n)
        };
        Ok(table
            .iter()
            .filter(|e| e.protocol != 0 || e.fwmark != 0)
            .copied()
            .collect())
    }

    /// The destinations of one service the services call returned.
    pub fn destinations(&self, svc: &ServiceEntry) -> io::Result<Vec<DestEntry>> {
        let n = svc.num_dests as usize;
        let bytes = size_of::<GetDests>() + n * size_of::<DestEntry>();
        let mut buf = vec![0u64; bytes.div_ceil(8)];
        // SAFETY: buf holds a GetDests header.
        unsafe {
            let head = buf.as_mut_ptr().cast::<GetDests>();
            (*head).protocol = svc.protocol;
            (*head).addr = svc.addr;
            (*head).port = svc.port;
            (*head).fwmark = svc.fwmark;
            (*head).num_dests = svc.num_dests;
        }
        self.get(IP_VS_SO_GET_DESTS, &mut buf)?;
        // SAFETY: n entries follow the header.
        let table = unsafe {
            let head = buf.as_ptr().cast::<GetDests>();
            std::slice::from_raw_parts((*head).entrytable.as_ptr(), n)
        };
        Ok(table.to_vec())
    }
}
