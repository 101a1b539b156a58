//! Per-Service IPVS settings from annotations. kube-router's names are
//! read too, so a kube-router user can switch; ours win when both are set.

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

/// The schedulers of Linux IPVS.
const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// (annotation name, value) of the first of `names` that is set.
fn lookup<'a>(annotations: &'a Labels, names: &[&'static str]) -> Option<(&'static str, &'a str)> {
    names
        .iter()
        .find_map(|n| annotations.get(n).map(|v| (*n, v.trim())))
}

/// The scheduler, `rr` by default; Err(field, message) for an unknown one.
pub fn scheduler(annotations: &Labels) -> Result<String, (String, String)> {
    match lookup(annotations, &SCHEDULER) {
        None => Ok("rr".to_string()),
        Some((name, value)) if SCHEDULERS.contains(&value) => {
            let _ = name;
            Ok(value.to_string())
        }
        Some((name, value)) => Err((
            format!("metadata.annotations[{name}]"),
            format!(
                "unknown IPVS scheduler {value:?} (one of {})",
                SCHEDULERS.join(", ")
            ),
        )),
    }
}

/// flag-1..flag-3 for the sh and mh schedulers, the only ones that read
/// them. Err(field, message) names a bad value; flags on another scheduler
/// are reported and ignored by the caller.
pub fn sched_flags(
    annotations: &Labels,
) -> Result<Option<(String, ServiceFlags)>, (String, String)> {
    let Some((name, value)) = lookup(annotations, &SCHED_FLAGS) else {
        return Ok(None);
    };
    let field = format!("metadata.annotations[{name}]");
    let mut flags = ServiceFlags::default();
    for flag in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        match flag {
            "flag-1" => flags.sched1 = true,
            "flag-2" => flags.sched2 = true,
            "flag-3" => flags.sched3 = true,
            other => {
                return Err((
                    field,
                    format!("unknown scheduler flag {other:?} (flag-1, flag-2 or flag-3)"),
                ))
            }
        }
    }
    Ok(Some((field, flags)))
}

/// Hairpin for this Service: Some(true) when the annotation is set (empty
/// or "true", as kube-router reads its mere presence), Some(false) for
/// "false", None when absent. Err(field, message) for another value.
pub fn hairpin(annotations: &Labels) -> Result<Option<bool>, (String, String)> {
    match lookup(annotations, &HAIRPIN) {
        None => Ok(None),
        Some((_, "" | "true")) => Ok(Some(true)),
        Some((_, "false")) => Ok(Some(false)),
        Some((name, value)) => Err((
            format!("metadata.annotations[{name}]"),
            format!("{value:?} is not \"true\", \"false\" or empty"),
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
        let (field, msg) = scheduler(&bad).unwrap_err();
        assert_eq!(
            field,
            "metadata.annotations[kube-router.io/service.scheduler]"
        );
        assert!(msg.contains("fastest"));
    }

    #[test]
    fn sched_flags_parse_and_reject_unknowns() {
        let a = ann(&[("kube-router.io/service.schedflags", "flag-1, flag-2")]);
        let (_, f) = sched_flags(&a).unwrap().unwrap();
        assert!(f.sched1 && f.sched2 && !f.sched3);
        let bad = ann(&[("ipwarden.io/service.schedflags", "flag-9")]);
        assert!(sched_flags(&bad).is_err());
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
        let (field, _) = hairpin(&bad).unwrap_err();
        assert_eq!(field, "metadata.annotations[ipwarden.io/service.hairpin]");
    }
}
