use std::{io, path::PathBuf};

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
    Logger(#[source] aya_log::Error),
    #[error("preparing the bpffs pin directories: {0}")]
    PinDirs(#[source] io::Error),
    #[error("checking the maps pinned under {dir}: {source}")]
    PinnedMaps {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pinning the link of {iface} at {path}: {source}")]
    PinLink {
        iface: String,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("the link of {iface} ({what}): {source}")]
    Link {
        iface: String,
        what: &'static str,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("{iface}: both ipwarden clsact priorities are taken")]
    PrioritiesTaken { iface: String },
    #[error("duplicating the fd of eBPF map {name}: {source}")]
    MapFd {
        name: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("mapping eBPF maps {table} and {bits} into memory: {source}")]
    Mmap {
        table: &'static str,
        bits: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{members} members do not fit the classifier's table")]
    TableFull { members: usize },
    #[error("BPF_PROG_TEST_RUN: {0}")]
    TestRun(#[source] io::Error),
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_failure_keeps_its_typed_source() {
        let e = BpfError::PinnedMaps {
            dir: "/sys/fs/bpf/ipwarden/maps".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        let source = e.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(source.and_then(io::Error::raw_os_error), Some(libc::EACCES));
        assert!(e
            .to_string()
            .starts_with("checking the maps pinned under /sys/fs/bpf/ipwarden/maps: "));
    }
}
