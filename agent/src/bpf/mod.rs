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
mod mmap;
pub mod pins;
pub mod runtime;
pub mod sources;
pub mod table;
pub mod test_run;

use std::path::{Path, PathBuf};

use aya::{maps::RingBuf, programs::SchedClassifier, Ebpf, EbpfLoader};
use ipwarden_common::{
    maps::{checked_mark, LAYOUT_VERSION},
    names, Config, Mode,
};

pub use attach::{detach_clsact, Attachment};
pub use error::BpfError;
pub use maps::{HitTotals, MirrorMaps, ServiceMirror};
pub use migrate::Pinned;
pub use mirror::BpfMirror;
pub use pins::PinLayout;
pub use sources::EgressSources;

/// Where the container image installs the object.
pub const DEFAULT_OBJECT: &str = "/usr/lib/ipwarden/ipwarden.bpf.o";

/// Where `cargo xtask build-ebpf` leaves the object in the checkout this
/// binary was built from (a host build, outside the image).
pub fn built_object() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("/"))
        .join("ebpf/target/bpfel-unknown-none/release/ipwarden")
}

/// The object to load: `explicit` (`--bpf-object`, IPWARDEN_BPF_OBJECT)
/// as given, else the image's, else the checkout's; the error names every
/// path tried.
pub fn find_object(explicit: Option<&Path>) -> Result<PathBuf, BpfError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let tried = vec![PathBuf::from(DEFAULT_OBJECT), built_object()];
    match tried.iter().find(|p| p.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(BpfError::ObjectNotFound { tried }),
    }
}

/// The object path from IPWARDEN_BPF_OBJECT, else [`find_object`]'s
/// (tests and benches; [`DEFAULT_OBJECT`] when none exists, so the load
/// names it).
pub fn object_path_from_env() -> PathBuf {
    let explicit = std::env::var_os("IPWARDEN_BPF_OBJECT").map(PathBuf::from);
    find_object(explicit.as_deref()).unwrap_or_else(|_| PathBuf::from(DEFAULT_OBJECT))
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

/// The kernel's run-time statistics of a program (counted only while BPF
/// statistics are on: `sysctl kernel.bpf_stats_enabled=1`, or
/// `aya::sys::enable_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub run_time_ns: u64,
    pub run_count: u64,
}

impl RunStats {
    /// Nanoseconds per run between `earlier` and `self`.
    pub fn ns_per_run_since(&self, earlier: &RunStats) -> Option<f64> {
        let runs = self.run_count.checked_sub(earlier.run_count)?;
        let ns = self.run_time_ns.checked_sub(earlier.run_time_ns)?;
        (runs > 0).then(|| ns as f64 / runs as f64)
    }
}

/// The loaded object: programs verified and loaded, maps created.
pub struct TcProgram {
    ebpf: Ebpf,
    /// The mirror's maps, once taken out of `ebpf` (first use of
    /// [`Self::services`] or [`Self::take_mirror`]).
    mirror: Option<MirrorMaps>,
}

impl TcProgram {
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
        pins.create().map_err(BpfError::PinDirs)?;
        let (pinned, aside) = migrate::check(pins).map_err(|source| BpfError::PinnedMaps {
            dir: pins.maps_dir(),
            source,
        })?;
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
        Ok(Self { ebpf, mirror: None })
    }

    /// A reader of the program's log lines (aya-log) that hands them to
    /// `sink`; poll it when its fd is readable, then call `flush`.
    pub fn logger<T: log::Log>(&mut self, sink: T) -> Result<aya_log::EbpfLogger<T>, BpfError> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, sink).map_err(BpfError::Logger)
    }

    /// Sets mode and mark in the config map; the program reads it per packet,
    /// so a change needs no reload. The table's half and seeds (written by
    /// the mirror) stay as they are.
    pub fn configure(&mut self, mode: Mode, mark: u32) -> Result<(), BpfError> {
        let mut map = maps::config_mut(&mut self.ebpf)?;
        let old = map.get(&0, 0).unwrap_or_default();
        let config = Config {
            mode: mode as u32,
            mark,
            checked_mark: checked_mark(mark),
            layout_version: LAYOUT_VERSION,
            ..old
        };
        map.set(0, config, 0).map_err(|source| BpfError::Map {
            name: names::MAP_CONFIG,
            source,
        })
    }

    /// The loaded ingress classifier.
    fn classifier(&self) -> Result<&SchedClassifier, BpfError> {
        self.ebpf
            .program(names::PROG_INGRESS)
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

    /// The classifier's run time and run count so far.
    pub fn run_stats(&self) -> Result<RunStats, BpfError> {
        let prog = self.classifier()?;
        let info = prog.info().map_err(|source| BpfError::Program {
            name: names::PROG_INGRESS,
            source,
        })?;
        Ok(RunStats {
            run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
            run_count: info.run_count(),
        })
    }

    /// Runs the classifier `repeat` times on `frame` (an Ethernet frame)
    /// with BPF_PROG_TEST_RUN: its verdict and the mark it left.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<test_run::TestRun, BpfError> {
        let prog = self.classifier()?;
        let fd = prog.fd().map_err(|source| BpfError::Program {
            name: names::PROG_INGRESS,
            source,
        })?;
        test_run::run(std::os::fd::AsFd::as_fd(fd), frame, repeat).map_err(BpfError::TestRun)
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

    fn mirror_maps(&mut self) -> Result<&mut MirrorMaps, BpfError> {
        if self.mirror.is_none() {
            self.mirror = Some(MirrorMaps::take_from(&mut self.ebpf)?);
        }
        Ok(self.mirror.as_mut().expect("just set"))
    }

    /// Hands the mirror maps to a [`BpfMirror`] (the store's mirror hook);
    /// [`Self::services`] is unavailable afterwards.
    pub fn take_mirror(&mut self) -> Result<BpfMirror, BpfError> {
        self.mirror_maps()?;
        let maps = self.mirror.take().ok_or(BpfError::Missing {
            what: "map",
            name: names::MAP_SERVICES,
        })?;
        Ok(BpfMirror::new(maps))
    }

    /// The egress-restricted sources (the store's source hook).
    pub fn take_sources(&mut self) -> Result<EgressSources, BpfError> {
        EgressSources::take_from(&mut self.ebpf)
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

    /// The service mirror map (`IPW_SVC_PORTS`) with its hit counters;
    /// every change is published to the classifier's table.
    pub fn services(&mut self) -> Result<ServiceMirror<'_>, BpfError> {
        Ok(ServiceMirror::new(self.mirror_maps()?))
    }
}
