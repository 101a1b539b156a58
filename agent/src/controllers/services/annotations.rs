//! Per-Service settings from annotations. kube-router's names are read
//! too, so a kube-router user can switch; ours win when both are set.

use crate::{cluster::compact::Labels, desired::ServiceFlags};

pub const SCHEDULER: [&str; 2] = [
    "ipwarden.io/service.scheduler",
    "kube-router.io/service.scheduler",
];
pub const SCHED_FLAGS: [&str; 2] = [
    "ipwarden.io/service.schedflags",
    "kube-router.io/service.schedflags",
];

pub const HAIRPIN: [&str; 2] = [
    "ipwarden.io/service.hairpin",
    "kube-router.io/service.hairpin",
];
pub const HAIRPIN_EXTERNAL_IPS: [&str; 2] = [
    "ipwarden.io/service.hairpin.externalips",
    "kube-router.io/service.hairpin.externalips",
];
pub const LOCAL: [&str; 2] = ["ipwarden.io/service.local", "kube-router.io/service.local"];
pub const SKIP_LB_IPS: [&str; 2] = [
    "ipwarden.io/service.skiplbips",
    "kube-router.io/service.skiplbips",
];

/// The schedulers of Linux IPVS.
const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// An annotation whose value cannot be read: the field that names it
/// (`metadata.annotations[NAME]`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationError {
    pub field: String,
    pub message: String,
}

impl AnnotationError {
    fn new(name: &str, message: String) -> Self {
        Self {
            field: field(name),
            message,
        }
    }
}

fn field(name: &str) -> String {
    format!("metadata.annotations[{name}]")
}

/// (annotation name, value) of the first of `names` that is set.
fn lookup<'a>(annotations: &'a Labels, names: &[&'static str]) -> Option<(&'static str, &'a str)> {
    names
        .iter()
        .find_map(|n| annotations.get(n).map(|v| (*n, v.trim())))
}

/// The scheduler, `rr` by default; an error for an unknown one.
pub fn scheduler(annotations: &Labels) -> Result<String, AnnotationError> {
    match lookup(annotations, &SCHEDULER) {
        None => Ok("rr".to_string()),
        Some((_, value)) if SCHEDULERS.contains(&value) => Ok(value.to_string()),
        Some((name, value)) => Err(AnnotationError::new(
            name,
            format!(
                "unknown IPVS scheduler {value:?} (one of {})",
                SCHEDULERS.join(", ")
            ),
        )),
    }
}

/// flag-1..flag-3 for the sh and mh schedulers, the only ones that read
/// them, with the field they came from; an error names a bad value. Flags
/// on another scheduler are reported and ignored by the caller.
pub fn sched_flags(
    annotations: &Labels,
) -> Result<Option<(String, ServiceFlags)>, AnnotationError> {
    let Some((name, value)) = lookup(annotations, &SCHED_FLAGS) else {
        return Ok(None);
    };
    let mut flags = ServiceFlags::default();
    for flag in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        match flag {
            "flag-1" => flags.sched1 = true,
            "flag-2" => flags.sched2 = true,
            "flag-3" => flags.sched3 = true,
            other => {
                return Err(AnnotationError::new(
                    name,
                    format!("unknown scheduler flag {other:?} (flag-1, flag-2 or flag-3)"),
                ))
            }
        }
    }
    Ok(Some((field(name), flags)))
}

/// A switch kube-router turns on by the annotation's mere presence:
/// Some(true) when set empty or "true", Some(false) for "false", None
/// when absent; an error for another value.
fn presence_switch(
    annotations: &Labels,
    names: &[&'static str],
) -> Result<Option<bool>, AnnotationError> {
    match lookup(annotations, names) {
        None => Ok(None),
        Some((_, "" | "true")) => Ok(Some(true)),
        Some((_, "false")) => Ok(Some(false)),
        Some((name, value)) => Err(AnnotationError::new(
            name,
            format!("{value:?} is not \"true\", \"false\" or empty"),
        )),
    }
}

/// Hairpin for this Service: Some(true) when the annotation is set (empty
/// or "true", as kube-router reads its mere presence), Some(false) for
/// "false", None when absent.
pub fn hairpin(annotations: &Labels) -> Result<Option<bool>, AnnotationError> {
    presence_switch(annotations, &HAIRPIN)
}

/// kube-router's hairpin of externalIPs, read as `hairpin` is. Our
/// hairpin covers every frontend of the Service already, externalIPs
/// included, and in kube-router this alone turns no hairpin on: the
/// caller only checks the value.
pub fn hairpin_external_ips(annotations: &Labels) -> Result<Option<bool>, AnnotationError> {
    presence_switch(annotations, &HAIRPIN_EXTERNAL_IPS)
}

/// Leave the LoadBalancer ingress IPs out, read as `hairpin` is; false
/// when absent.
pub fn skip_lb_ips(annotations: &Labels) -> Result<bool, AnnotationError> {
    Ok(presence_switch(annotations, &SKIP_LB_IPS)?.unwrap_or(false))
}

/// Force externalTrafficPolicy Local: true for "true" only (kube-router
/// compares with "true"), false for "false" or when absent; an error for
/// another value (kube-router would read it as false).
pub fn local(annotations: &Labels) -> Result<bool, AnnotationError> {
    match lookup(annotations, &LOCAL) {
        None | Some((_, "false")) => Ok(false),
        Some((_, "true")) => Ok(true),
        Some((name, value)) => Err(AnnotationError::new(
            name,
            format!("{value:?} is not \"true\" or \"false\""),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> Labels {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Labels::kept(Some(map), |_| true)
    }

    #[test]
    fn ours_win_over_kube_router_and_rr_is_the_default() {
        assert_eq!(scheduler(&Labels::default()).unwrap(), "rr");
        let both = ann(&[
            ("kube-router.io/service.scheduler", "lc"),
            ("ipwarden.io/service.scheduler", "mh"),
        ]);
        assert_eq!(scheduler(&both).unwrap(), "mh");
        let kr = ann(&[("kube-router.io/service.scheduler", "sh")]);
        assert_eq!(scheduler(&kr).unwrap(), "sh");
    }

    #[test]
    fn a_bad_scheduler_names_the_annotation() {
        let bad = ann(&[("kube-router.io/service.scheduler", "fastest")]);
        let err = scheduler(&bad).unwrap_err();
        assert_eq!(
            err.field,
            "metadata.annotations[kube-router.io/service.scheduler]"
        );
        assert!(err.message.contains("fastest"));
    }

    #[test]
    fn sched_flags_parse_and_reject_unknowns() {
        let a = ann(&[("kube-router.io/service.schedflags", "flag-1, flag-2")]);
        let (field, f) = sched_flags(&a).unwrap().unwrap();
        assert_eq!(
            field,
            "metadata.annotations[kube-router.io/service.schedflags]"
        );
        assert!(f.sched1 && f.sched2 && !f.sched3);
        let bad = ann(&[("ipwarden.io/service.schedflags", "flag-9")]);
        assert_eq!(
            sched_flags(&bad).unwrap_err(),
            AnnotationError {
                field: "metadata.annotations[ipwarden.io/service.schedflags]".into(),
                message: "unknown scheduler flag \"flag-9\" (flag-1, flag-2 or flag-3)".into(),
            }
        );
    }

    #[test]
    fn hairpin_is_on_when_present_and_ours_win() {
        assert_eq!(hairpin(&Labels::default()).unwrap(), None);
        let kr = ann(&[("kube-router.io/service.hairpin", "")]);
        assert_eq!(hairpin(&kr).unwrap(), Some(true));
        let both = ann(&[
            ("kube-router.io/service.hairpin", "true"),
            ("ipwarden.io/service.hairpin", "false"),
        ]);
        assert_eq!(hairpin(&both).unwrap(), Some(false));
        let bad = ann(&[("ipwarden.io/service.hairpin", "yes")]);
        let err = hairpin(&bad).unwrap_err();
        assert_eq!(
            err.field,
            "metadata.annotations[ipwarden.io/service.hairpin]"
        );
        assert_eq!(err.message, "\"yes\" is not \"true\", \"false\" or empty");
    }

    #[test]
    fn hairpin_external_ips_is_read_as_hairpin_is() {
        assert_eq!(hairpin_external_ips(&Labels::default()).unwrap(), None);
        let kr = ann(&[("kube-router.io/service.hairpin.externalips", "")]);
        assert_eq!(hairpin_external_ips(&kr).unwrap(), Some(true));
        let both = ann(&[
            ("kube-router.io/service.hairpin.externalips", ""),
            ("ipwarden.io/service.hairpin.externalips", "false"),
        ]);
        assert_eq!(hairpin_external_ips(&both).unwrap(), Some(false));
        let bad = ann(&[("kube-router.io/service.hairpin.externalips", "1")]);
        assert_eq!(
            hairpin_external_ips(&bad).unwrap_err().field,
            "metadata.annotations[kube-router.io/service.hairpin.externalips]"
        );
    }

    #[test]
    fn skip_lb_ips_is_on_when_present_and_ours_win() {
        assert!(!skip_lb_ips(&Labels::default()).unwrap());
        for on in ["", "true"] {
            let kr = ann(&[("kube-router.io/service.skiplbips", on)]);
            assert!(skip_lb_ips(&kr).unwrap(), "{on:?}");
        }
        let both = ann(&[
            ("kube-router.io/service.skiplbips", ""),
            ("ipwarden.io/service.skiplbips", "false"),
        ]);
        assert!(!skip_lb_ips(&both).unwrap());
        let bad = ann(&[("ipwarden.io/service.skiplbips", "on")]);
        let err = skip_lb_ips(&bad).unwrap_err();
        assert_eq!(
            err.field,
            "metadata.annotations[ipwarden.io/service.skiplbips]"
        );
        assert!(err.message.contains("\"on\""), "{}", err.message);
    }

    #[test]
    fn local_is_on_for_true_only_and_ours_win() {
        assert!(!local(&Labels::default()).unwrap());
        let kr = ann(&[("kube-router.io/service.local", "true")]);
        assert!(local(&kr).unwrap());
        let off = ann(&[("kube-router.io/service.local", "false")]);
        assert!(!local(&off).unwrap());
        let both = ann(&[
            ("kube-router.io/service.local", "true"),
            ("ipwarden.io/service.local", "false"),
        ]);
        assert!(!local(&both).unwrap());
        // kube-router reads an empty value as false: we say so.
        let empty = ann(&[("kube-router.io/service.local", "")]);
        let err = local(&empty).unwrap_err();
        assert_eq!(
            err.field,
            "metadata.annotations[kube-router.io/service.local]"
        );
        assert_eq!(err.message, "\"\" is not \"true\" or \"false\"");
    }
}
