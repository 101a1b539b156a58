//! aya-log-ebpf's interface with its log ring buffer declared as a BTF map.
#![no_std]

pub use aya_log_ebpf_macros::{debug, error, info, log, trace, warn};

/// What the `aya-log-ebpf-macros` expansion refers to, by these names.
#[doc(hidden)]
pub mod macro_support {
    use aya_ebpf::{btf_maps::RingBuf, macros::btf_map, Global};
    pub use aya_log_common::{
        Argument, DefaultFormatter, DisplayHint, Field, Header, IpFormatter, Level, LogValueLength,
        LowerHexFormatter, LowerMacFormatter, PointerFormatter, UpperHexFormatter,
        UpperMacFormatter,
    };

    /// 128 KiB, as upstream; user space (aya-log's EbpfLogger) finds it by name.
    #[btf_map]
    pub static AYA_LOGS: RingBuf<(), { 1 << 17 }> = RingBuf::new();

    /// Patched by user space before load (EbpfLoader::override_global).
    #[unsafe(no_mangle)]
    pub static AYA_LOG_LEVEL: Global<u8> = Global::new(0xff);

    #[inline(always)]
    pub fn level_enabled(level: Level) -> bool {
        level as u8 <= AYA_LOG_LEVEL.load()
    }
}
