//! The CPU a sync costs: its worker thread's own time plus what the
//! children it waited for used (iptables-restore and the like). Wall time
//! on a shared machine says little; this is what the periodic no-op full
//! sync is held to (issue 17: at most 5% of the first full sync's CPU).

use std::time::Duration;

use nix::{
    sys::resource::{getrusage, UsageWho},
    time::{clock_gettime, ClockId},
};

/// CPU used by the calling thread and by the process's reaped children
/// since [`SyncCpu::start`]. Children are counted process-wide: a child
/// another thread reaps in the window is counted too.
pub struct SyncCpu {
    start: Duration,
    faults: u64,
}

impl SyncCpu {
    pub fn start() -> Self {
        Self {
            start: now(),
            faults: thread_minor_faults(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        now().saturating_sub(self.start)
    }

    /// Minor page faults the calling thread took since the start: pages
    /// touched for the first time, or again after malloc gave them back.
    pub fn minor_faults(&self) -> u64 {
        thread_minor_faults().saturating_sub(self.faults)
    }
}

fn thread_minor_faults() -> u64 {
    getrusage(UsageWho::RUSAGE_THREAD)
        .map(|u| u.minor_page_faults() as u64)
        .unwrap_or_default()
}

fn now() -> Duration {
    thread_time() + children_time()
}

fn thread_time() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

fn children_time() -> Duration {
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|u| duration(u.user_time()) + duration(u.system_time()))
        .unwrap_or_default()
}

fn duration(t: nix::sys::time::TimeVal) -> Duration {
    Duration::from_micros(t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_threads_work_and_its_childrens() {
        let cpu = SyncCpu::start();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let own = cpu.elapsed();
        assert!(own > Duration::ZERO, "{x}");
        let child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh");
        assert!(child.success());
        assert!(cpu.elapsed() > own);
    }

    #[test]
    fn counts_the_pages_the_thread_touches_first() {
        let cpu = SyncCpu::start();
        // Above malloc's largest mmap threshold (32 MiB): fresh pages from
        // the kernel, each faulting at its first write (one per 2 MiB with
        // transparent huge pages).
        let mut v = vec![0u8; 40 << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        let faults = cpu.minor_faults();
        assert!(faults >= 20, "{faults} faults; {}", v[4096]);
    }
}
