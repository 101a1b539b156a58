//! Attaching the classifier: TCX (kernel 6.6+) or a clsact qdisc.

use std::path::Path;

use aya::programs::{
    links::Link as _,
    links::{FdLink, LinkError, PinnedLink},
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    LinkOrder, ProgramError, SchedClassifier, TcAttachType,
};

use super::BpfError;

/// How the program ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// A TCX link (kernel 6.6+): ordered with other programs, no qdisc.
    Tcx,
    /// A cls_bpf filter under a clsact qdisc (older kernels).
    Clsact,
}

/// The two cls_bpf priorities ipwarden alternates between on kernels
/// without TCX, so a new program is attached before the old one is
/// removed (make-before-break across restarts).
const CLSACT_PRIORITIES: [u16; 2] = [0x1e00, 0x1e01];
const CLSACT_HANDLE: u16 = 1;

fn has_tcx() -> bool {
    // aya's attach() picks TCX on kernels >= 6.6; mirror its test.
    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
}

fn err(iface: &str) -> impl Fn(ProgramError) -> BpfError + '_ {
    move |source| BpfError::Attach {
        iface: iface.to_string(),
        source,
    }
}

fn link_err<'a>(iface: &'a str, what: &'static str) -> impl Fn(LinkError) -> BpfError + 'a {
    move |source| BpfError::Link {
        iface: iface.to_string(),
        what,
        source,
    }
}

fn add_clsact(iface: &str) -> Result<(), BpfError> {
    // clsact may already be there (another program, or our last run).
    match tc::qdisc_add_clsact(iface) {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = ProgramError::from(e);
            if is_eexist(&e) {
                Ok(())
            } else {
                Err(err(iface)(e))
            }
        }
    }
}

/// Attaches for the lifetime of `prog` (tests, the demo).
pub(super) fn ingress(prog: &mut SchedClassifier, iface: &str) -> Result<Attachment, BpfError> {
    let kind = if has_tcx() {
        Attachment::Tcx
    } else {
        add_clsact(iface)?;
        Attachment::Clsact
    };
    prog.attach(iface, TcAttachType::Ingress)
        .map_err(err(iface))?;
    Ok(kind)
}

/// Attaches so that the attachment outlives this process: a TCX link
/// pinned at `pin` (an existing pinned link gets the new program atomically,
/// bpf_link_update), or a cls_bpf filter at the free one of two priorities,
/// with the filter of the previous run removed only after the new one is in.
pub(super) fn ingress_persistent(
    prog: &mut SchedClassifier,
    iface: &str,
    pin: &Path,
) -> Result<Attachment, BpfError> {
    if has_tcx() {
        let id = match PinnedLink::from_pin(pin) {
            Ok(old) => {
                let link = SchedClassifierLink::try_from(FdLink::from(old))
                    .map_err(link_err(iface, "adopting the pinned one"))?;
                prog.attach_to_link(link).map_err(err(iface))?
            }
            Err(_) => prog
                .attach_with_options(
                    iface,
                    TcAttachType::Ingress,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(err(iface))?,
        };
        let link = prog.take_link(id).map_err(err(iface))?;
        let fd = FdLink::try_from(link).map_err(link_err(iface, "taking its fd"))?;
        if !pin.exists() {
            fd.pin(pin).map_err(|source| BpfError::PinLink {
                iface: iface.to_string(),
                path: pin.to_path_buf(),
                source,
            })?;
        }
        // Dropping the fd leaves the pinned link (and the program) in place.
        return Ok(Attachment::Tcx);
    }
    add_clsact(iface)?;
    let handle = TcHandle::new(0, CLSACT_HANDLE);
    let mut attached = None;
    for (new, old) in [(0, 1), (1, 0)] {
        let opts = NlOptions {
            priority: CLSACT_PRIORITIES[new],
            handle,
            classid: None,
        };
        match prog.attach_with_options(iface, TcAttachType::Ingress, TcAttachOptions::Netlink(opts))
        {
            Ok(id) => {
                attached = Some((id, old));
                break;
            }
            // That priority holds the previous run's filter: use the other.
            Err(e) if is_eexist(&e) => continue,
            Err(e) => return Err(err(iface)(e)),
        }
    }
    let (id, old) = attached.ok_or_else(|| BpfError::PrioritiesTaken {
        iface: iface.to_string(),
    })?;
    // The filter must survive this process: aya would remove it on drop.
    std::mem::forget(prog.take_link(id).map_err(err(iface))?);
    if let Ok(previous) = SchedClassifierLink::attached(
        iface,
        TcAttachType::Ingress,
        CLSACT_PRIORITIES[old],
        handle,
        None,
    ) {
        // Not there on a first start: nothing to remove.
        let _ = previous.detach();
    }
    Ok(Attachment::Clsact)
}

/// EEXIST (a qdisc or a filter priority already there), which aya may
/// report with only the kernel's extack text ("Exclusivity flag on, cannot
/// modify") and not the errno.
fn is_eexist(e: &ProgramError) -> bool {
    let errno = match e {
        ProgramError::TcError(tc::TcError::NetlinkError(n)) | ProgramError::NetlinkError(n) => {
            n.raw_os_error()
        }
        ProgramError::TcError(tc::TcError::IoError(io)) => io.raw_os_error(),
        _ => None,
    };
    // The error's text, all the way down its sources.
    let text = format!("{e} {e:?}");
    errno == Some(libc::EEXIST)
        || text.contains("Exclusivity flag on")
        || text.contains("File exists")
}

/// Removes both of ipwarden's clsact filters from `iface` (cleanup).
pub fn detach_clsact(iface: &str) {
    for priority in CLSACT_PRIORITIES {
        if let Ok(link) = SchedClassifierLink::attached(
            iface,
            TcAttachType::Ingress,
            priority,
            TcHandle::new(0, CLSACT_HANDLE),
            None,
        ) {
            let _ = link.detach();
        }
    }
}
