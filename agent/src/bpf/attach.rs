//! Attaching the classifier: TCX (kernel 6.6+) or a clsact qdisc.

use aya::programs::{tc, SchedClassifier, TcAttachType};

use super::BpfError;

/// How the program ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// A TCX link (kernel 6.6+): ordered with other programs, no qdisc.
    Tcx,
    /// A cls_bpf filter under a clsact qdisc (older kernels).
    Clsact,
}

pub(super) fn ingress(prog: &mut SchedClassifier, iface: &str) -> Result<Attachment, BpfError> {
    let err = |source| BpfError::Attach {
        iface: iface.to_string(),
        source,
    };
    // aya's attach() picks TCX itself on kernels >= 6.6; mirror its test.
    let tcx = aya::util::KernelVersion::current()
        .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
    let kind = if tcx {
        Attachment::Tcx
    } else {
        // clsact may already be there (another program, or our last run):
        // that is fine, anything else is not.
        if let Err(e) = tc::qdisc_add_clsact(iface) {
            let exists = matches!(&e, tc::TcError::IoError(io) if io.kind() == std::io::ErrorKind::AlreadyExists)
                || e.to_string().contains("exists");
            if !exists {
                return Err(err(aya::programs::ProgramError::from(e)));
            }
        }
        Attachment::Clsact
    };
    prog.attach(iface, TcAttachType::Ingress).map_err(err)?;
    Ok(kind)
}
