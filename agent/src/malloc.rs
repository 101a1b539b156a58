//! glibc malloc's tuning for a long-running agent (BENCHMARKS.md, "Where
//! the agent's memory goes").

/// glibc's malloc gives a thread that finds the arenas busy an arena of its
/// own, up to eight per core, and space freed in one arena serves only
/// that arena: the agent's tokio workers, controller threads and blocking
/// pool would each keep the high-water mark of their own allocations.
/// One arena: the two controllers' first syncs then reuse each other's
/// freed space (10k Services in the VM: peak 91-92 MiB against 98-101
/// with two; no cost in time seen through the load's noise).
const ARENAS: i32 = 1;

/// Allocations from this size up get pages of their own (mmap), returned
/// to the kernel when freed. glibc starts at this size too, but raises it
/// to the largest such block freed so far (up to 32 MiB): after the first
/// sync's multi-MiB buffers (an iptables-save read, the rendered script,
/// the service table's vectors) every later one was carved from the one
/// heap, and each left a hole there that the heap's RSS kept. Fixed, the
/// agent bench's peak at 10k fell by 4.1 MiB (BENCHMARKS.md, "Stop 20:
/// peak RSS at 10k"). Fixing it also keeps glibc's 128 KiB trim threshold.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Bounds the arenas to [`ARENAS`] unless `MALLOC_ARENA_MAX` is set, and
/// fixes the mmap threshold at [`MMAP_THRESHOLD`] unless it is set
/// (`MALLOC_MMAP_THRESHOLD_` or `GLIBC_TUNABLES`): the environment still
/// wins. Call before any other thread exists.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets a parameter of the allocator.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
        }
        if !mmap_threshold_in_env() {
            // SAFETY: as above.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        }
    }
}

/// Whether the environment sets malloc's mmap threshold.
#[cfg(target_env = "gnu")]
fn mmap_threshold_in_env() -> bool {
    std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("malloc.mmap_threshold"))
}

/// Hands the free pages inside malloc's heaps back to the kernel. The
/// first full sync builds the whole desired state beside what is kept,
/// then frees it; glibc keeps those pages mapped (it trims only the top of
/// the main heap), so the agent would hold that peak for ever. It costs a
/// walk of every free chunk with the arenas locked (hundreds of ms after a
/// 10k sync), so it is not for every sync.
pub fn release_free_pages() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns unused pages; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}
