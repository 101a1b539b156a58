//! Loading and attaching the eBPF object, and typed access to its maps.
//!
//! The object is read from a file (`--bpf-object`, env IPWARDEN_BPF_OBJECT)
//! rather than embedded: host builds and tests stay free of the BPF
//! toolchain, and the container image ships the object next to the binary.

mod attach;
mod error;
mod maps;

use std::path::{Path, PathBuf};

use aya::{programs::SchedClassifier, Ebpf, EbpfLoader};
use ipwarden_common::{maps::LAYOUT_VERSION, names, Config, Mode};

pub use attach::Attachment;
pub use error::BpfError;
pub use maps::{HitTotals, ServiceMirror};

/// Where the container image installs the object; `cargo xtask` passes the
/// freshly built one through IPWARDEN_BPF_OBJECT instead.
pub const DEFAULT_OBJECT: &str = "/usr/lib/ipwarden/ipwarden.bpf.o";

/// The object path from IPWARDEN_BPF_OBJECT, else [`DEFAULT_OBJECT`].
pub fn object_path_from_env() -> PathBuf {
    std::env::var_os("IPWARDEN_BPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_OBJECT))
}

/// Level of the program's own aya-log lines (AYA_LOG_LEVEL global).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgramLogLevel {
    Off,
    Error,
    Warn,
    Info,
    /// One line per mirror hit: for debugging only.
    Debug,
}

/// The loaded object: programs verified and loaded, maps created.
pub struct Dataplane {
    ebpf: Ebpf,
}

impl Dataplane {
    /// Loads `object`, with the program's log lines at `log_level`.
    pub fn load(object: &Path, log_level: ProgramLogLevel) -> Result<Self, BpfError> {
        let level: u8 = match log_level {
            ProgramLogLevel::Off => 0,
            ProgramLogLevel::Error => 1,
            ProgramLogLevel::Warn => 2,
            ProgramLogLevel::Info => 3,
            ProgramLogLevel::Debug => 4,
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &level, true)
            .load_file(object)
            .map_err(|source| BpfError::Load {
                path: object.to_path_buf(),
                source: Box::new(source),
            })?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(names::PROG_INGRESS)
            .ok_or(BpfError::Missing {
                what: "program",
                name: names::PROG_INGRESS,
            })?
            .try_into()
            .map_err(|source| BpfError::Program {
                name: names::PROG_INGRESS,
                source,
            })?;
        prog.load().map_err(|source| BpfError::Program {
            name: names::PROG_INGRESS,
            source,
        })?;
        Ok(Self { ebpf })
    }

    /// A reader of the program's log lines (aya-log) that hands them to
    /// `sink`; poll it when its fd is readable, then call `flush`.
    pub fn logger<T: log::Log>(&mut self, sink: T) -> Result<aya_log::EbpfLogger<T>, BpfError> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, sink)
            .map_err(|e| BpfError::Logger(e.to_string()))
    }

    /// Sets mode and mark in the config map; the program reads it per packet,
    /// so a change needs no reload.
    pub fn configure(&mut self, mode: Mode, mark: u32) -> Result<(), BpfError> {
        let config = Config {
            mode: mode as u32,
            mark,
            layout_version: LAYOUT_VERSION,
            _pad: 0,
        };
        maps::config_mut(&mut self.ebpf)?
            .set(0, config, 0)
            .map_err(|source| BpfError::Map {
                name: names::MAP_CONFIG,
                source,
            })
    }

    /// Attaches the ingress classifier to `iface` (TCX on kernels that have
    /// it, clsact otherwise) in the calling thread's network namespace.
    pub fn attach_ingress(&mut self, iface: &str) -> Result<Attachment, BpfError> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(names::PROG_INGRESS)
            .ok_or(BpfError::Missing {
                what: "program",
                name: names::PROG_INGRESS,
            })?
            .try_into()
            .map_err(|source| BpfError::Program {
                name: names::PROG_INGRESS,
                source,
            })?;
        attach::ingress(prog, iface)
    }

    /// The service mirror map (`IPW_SVC_PORTS`) with its hit counters.
    pub fn services(&mut self) -> Result<ServiceMirror<'_>, BpfError> {
        ServiceMirror::new(&mut self.ebpf)
    }
}
