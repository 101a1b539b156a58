//! The eBPF data plane as the daemon runs it: loaded with pinned maps,
//! configured, attached to the node's interfaces as they appear, mirroring
//! the service sets, and reading its events.

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, sync::Arc};

use ipwarden_common::Mode;

use super::{
    events::{self, EventSink},
    Attachment, BpfError, PinLayout, Pinned, ProgramLogLevel, TcProgram,
};
use crate::{kernel::link::LinkClient, store::SetStore};

/// Settings of the data plane (the `--bpf-*` flags).
#[derive(Clone, Debug)]
pub struct BpfOptions {
    pub mode: Mode,
    pub mark: u32,
    pub object: PathBuf,
    pub pins: PinLayout,
    /// Interfaces to attach to; empty means every interface with a global
    /// unicast address, plus the VIP interface.
    pub interfaces: Vec<String>,
    pub log_level: ProgramLogLevel,
    pub events_log: Option<PathBuf>,
    /// Where the event reader reports what it reads (the metrics).
    pub events: Arc<dyn EventSink>,
}

pub struct BpfRuntime {
    dp: TcProgram,
    opts: BpfOptions,
    attached: BTreeSet<String>,
    /// The interfaces seen at the last look, so that a partial sync on an
    /// unchanged set of links dumps no addresses (10k VIPs on ipwarden0).
    links_seen: Vec<(u32, String)>,
    pub pinned: Pinned,
}

impl BpfRuntime {
    /// Loads (adopting pinned maps), configures, hooks the mirror and the
    /// restricted sources into the store and starts the event reader. Attaching comes with
    /// [`Self::attach_new`], once interfaces exist.
    pub fn start(opts: BpfOptions, store: &SetStore) -> Result<Self, BpfError> {
        let (mut dp, pinned) =
            TcProgram::load_persistent(&opts.object, opts.log_level, &opts.pins)?;
        match &pinned {
            Pinned::Nothing => {
                tracing::info!(pins = %opts.pins.root().display(), "first start: maps created and pinned")
            }
            Pinned::Compatible => {
                tracing::info!(pins = %opts.pins.root().display(), "adopted the pinned maps")
            }
            Pinned::Replaced(why) => {
                tracing::warn!(reason = %why, "pinned maps of another layout replaced")
            }
        }
        dp.configure(opts.mode, opts.mark)?;
        store.set_mirror(Box::new(dp.take_mirror()?));
        store.set_source_sink(Box::new(dp.take_sources()?));
        events::spawn_reader(
            dp.take_events()?,
            opts.events.clone(),
            opts.events_log.clone(),
        );
        Ok(Self {
            dp,
            opts,
            attached: BTreeSet::new(),
            links_seen: Vec::new(),
            pinned,
        })
    }

    /// The interfaces the program is attached to.
    pub fn attached(&self) -> &BTreeSet<String> {
        &self.attached
    }

    /// `log` or `allow`.
    pub fn mode(&self) -> ipwarden_common::Mode {
        self.opts.mode
    }

    /// Attaches to every wanted interface not yet attached; returns the
    /// new ones. Failures are logged per interface and retried next time.
    pub fn attach_new(
        &mut self,
        link: &LinkClient,
        vip_interface: &str,
    ) -> Vec<(String, Attachment)> {
        self.attach(link, vip_interface, true)
    }

    /// As [`Self::attach_new`], but looks at addresses only when the links
    /// changed since the last look (an interface that gains its first
    /// global address on an unchanged set of links waits for the next
    /// full sync).
    pub fn attach_new_if_links_changed(
        &mut self,
        link: &LinkClient,
        vip_interface: &str,
    ) -> Vec<(String, Attachment)> {
        self.attach(link, vip_interface, false)
    }

    fn attach(
        &mut self,
        link: &LinkClient,
        vip_interface: &str,
        always: bool,
    ) -> Vec<(String, Attachment)> {
        match link.links() {
            Ok(links) if !always && links == self.links_seen => return Vec::new(),
            Ok(links) => self.links_seen = links,
            Err(e) => tracing::error!("listing interfaces to attach to: {e}"),
        }
        let wanted = match self.wanted(link, vip_interface) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("listing interfaces to attach to: {e}");
                return Vec::new();
            }
        };
        let mut done = Vec::new();
        for iface in wanted.difference(&self.attached.clone()) {
            match self.dp.attach_ingress_persistent(iface, &self.opts.pins) {
                Ok(how) => {
                    tracing::info!(interface = %iface, ?how, "classifier attached");
                    self.attached.insert(iface.clone());
                    done.push((iface.clone(), how));
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
        done
    }

    fn wanted(
        &self,
        link: &LinkClient,
        vip_interface: &str,
    ) -> Result<BTreeSet<String>, crate::kernel::link::LinkError> {
        if !self.opts.interfaces.is_empty() {
            return Ok(self.opts.interfaces.iter().cloned().collect());
        }
        let links = link.links()?;
        let global: BTreeSet<u32> = link
            .addresses()?
            .into_iter()
            .filter(|(_, a, _)| is_global_unicast(a))
            .map(|(i, _, _)| i)
            .collect();
        Ok(links
            .into_iter()
            .filter(|(i, name)| global.contains(i) || name == vip_interface)
            .map(|(_, name)| name)
            .collect())
    }
}

fn is_global_unicast(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => {
            !v4.is_loopback() && !v4.is_link_local() && !v4.is_multicast() && !v4.is_unspecified()
        }
        IpAddr::V6(v6) => {
            !v6.is_loopback()
                && !v6.is_multicast()
                && !v6.is_unspecified()
                && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}
