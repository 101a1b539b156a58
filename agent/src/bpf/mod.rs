//! Loading and attaching the eBPF object, and typed access to its maps.
//!
//! The object is read from a file (`--bpf-object`, env IPWARDEN_BPF_OBJECT)
//! rather than embedded: host builds and tests stay free of the BPF
//! toolchain, and the container image ships the object next to the binary.

mod attach;
mod error;
pub mod events;
mod maps;
pub mod migrate;
pub mod mirror;
pub mod pins;
pub mod runtime;

use std::path::{Path, PathBuf};

use aya::{
    maps::{HashMap as BpfHashMap, RingBuf},
    programs::SchedClassifier,
    Ebpf, EbpfLoader,
};
use ipwarden_common::{maps::LAYOUT_VERSION, names, Config, Mode};

pub use attach::{detach_clsact, Attachment};
pub use error::BpfError;
pub use maps::{HitTotals, ServiceMirror};
pub use migrate::Pinned;
pub use mirror::BpfMirror;
pub use pins::PinLayout;

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

/// The tc classifier of `ebpf`.
fn ingress_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, BpfError> {
    ebpf.program_mut(names::PROG_INGRESS)
        .ok_or(BpfError::Missing {
            what: "program",
            name: names::PROG_INGRESS,
        })?
        .try_into()
        .map_err(|source| BpfError::Program {
            name: names::PROG_INGRESS,
            source,
        })
}

/// The loaded object: programs verified and loaded, maps created.
pub struct Dataplane {
    ebpf: Ebpf,
}

impl Dataplane {
    /// Loads `object` with private maps (tests, the demo), with the
    /// program's log lines at `log_level`.
    pub fn load(object: &Path, log_level: ProgramLogLevel) -> Result<Self, BpfError> {
        Self::load_with(object, log_level, None)
    }

    /// Loads `object` with its maps pinned under `pins`: maps pinned by a
    /// previous run are adopted when they match this object (so counters
    /// and the mirror survive a restart), replaced when they do not.
    pub fn load_persistent(
        object: &Path,
        log_level: ProgramLogLevel,
        pins: &PinLayout,
    ) -> Result<(Self, Pinned), BpfError> {
        pins.create().map_err(|e| BpfError::Pin(e.to_string()))?;
        let (pinned, aside) = migrate::check(pins)
            .map_err(|e| BpfError::Pin(format!("{}: {e}", pins.maps_dir().display())))?;
        match Self::load_with(object, log_level, Some(pins)) {
            // The old maps (if any) close with `aside`.
            Ok(dp) => Ok((dp, pinned)),
            Err(e) => {
                migrate::revert(pins, aside);
                Err(e)
            }
        }
    }

    fn load_with(
        object: &Path,
        log_level: ProgramLogLevel,
        pins: Option<&PinLayout>,
    ) -> Result<Self, BpfError> {
        let level: u8 = match log_level {
            ProgramLogLevel::Off => 0,
            ProgramLogLevel::Error => 1,
            ProgramLogLevel::Warn => 2,
            ProgramLogLevel::Info => 3,
            ProgramLogLevel::Debug => 4,
        };
        let mut loader = EbpfLoader::new();
        loader.override_global(aya_log::LEVEL, &level, true);
        if let Some(pins) = pins {
            for name in names::PINNED_MAPS {
                loader.map_pin_path(name, pins.map(name));
            }
        }
        let mut ebpf = loader.load_file(object).map_err(|source| BpfError::Load {
            path: object.to_path_buf(),
            source: Box::new(source),
        })?;
        let prog = ingress_program(&mut ebpf)?;
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
        attach::ingress(ingress_program(&mut self.ebpf)?, iface)
    }

    /// Like [`Self::attach_ingress`], but the attachment outlives this
    /// process (pinned TCX link, or a clsact filter left in place), and a
    /// previous run's attachment is replaced make-before-break.
    pub fn attach_ingress_persistent(
        &mut self,
        iface: &str,
        pins: &PinLayout,
    ) -> Result<Attachment, BpfError> {
        attach::ingress_persistent(ingress_program(&mut self.ebpf)?, iface, &pins.link(iface))
    }

    /// Hands the two mirror maps to a [`BpfMirror`] (the store's mirror
    /// hook); [`Self::services`] is unavailable afterwards.
    pub fn take_mirror(&mut self) -> Result<BpfMirror, BpfError> {
        let services = self.take(names::MAP_SERVICES)?;
        let vips = self.take(names::MAP_VIPS)?;
        Ok(BpfMirror::new(
            BpfHashMap::try_from(services).map_err(|source| BpfError::Map {
                name: names::MAP_SERVICES,
                source,
            })?,
            BpfHashMap::try_from(vips).map_err(|source| BpfError::Map {
                name: names::MAP_VIPS,
                source,
            })?,
        ))
    }

    /// The event ring buffer, for [`events::spawn_reader`].
    pub fn take_events(&mut self) -> Result<RingBuf<aya::maps::MapData>, BpfError> {
        RingBuf::try_from(self.take(names::MAP_EVENTS)?).map_err(|source| BpfError::Map {
            name: names::MAP_EVENTS,
            source,
        })
    }

    fn take(&mut self, name: &'static str) -> Result<aya::maps::Map, BpfError> {
        self.ebpf
            .take_map(name)
            .ok_or(BpfError::Missing { what: "map", name })
    }

    /// The service mirror map (`IPW_SVC_PORTS`) with its hit counters.
    pub fn services(&mut self) -> Result<ServiceMirror<'_>, BpfError> {
        ServiceMirror::new(&mut self.ebpf)
    }
}
