//! Loading, pinning and attaching the eBPF object (aya).
