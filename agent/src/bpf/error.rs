use std::path::PathBuf;

/// Errors of the eBPF layer; each names the object, map or interface.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("loading eBPF object {path}: {source} (build it with `cargo xtask build-ebpf`)")]
    Load {
        path: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("no eBPF object at {} (build it with `cargo xtask build-ebpf`, or name it with --bpf-object / IPWARDEN_BPF_OBJECT)", tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or "))]
    ObjectNotFound { tried: Vec<PathBuf> },
    #[error("the eBPF object has no {what} named {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("attaching to interface {iface}: {source}")]
    Attach {
        iface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("starting the eBPF log reader: {0}")]
    Logger(String),
    #[error("bpffs pins: {0}")]
    Pin(String),
}
