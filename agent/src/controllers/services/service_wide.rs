//! What every frontend of one Service shares, read once from its spec and
//! annotations: the scheduler, its flags and the affinity ([`Template`]),
//! the traffic policies and hairpin ([`TrafficPolicy`]) and the
//! loadBalancerSourceRanges. A value that cannot be read is a problem
//! naming its field; the rest of the Service is programmed.

use ipnet::IpNet;

use super::{annotations, frontends::FrontendKind, Options, ServiceCtx};
use crate::{
    cluster::compact::{Service, ServiceSpec},
    desired::{Problem, RealServer, ServiceFlags, ServiceRef, VirtualService, VsKey},
};

/// Kubernetes' default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

impl ServiceCtx {
    /// What every frontend of `svc` shares. None when the scheduler is
    /// bad (the Service is skipped).
    pub(super) fn wide(
        &self,
        svc: &Service,
        spec: &ServiceSpec,
        opts: &Options,
        problems: &mut Vec<Problem>,
    ) -> Option<ServiceWide> {
        Some(ServiceWide {
            template: self.template(svc, problems)?,
            policy: TrafficPolicy {
                itp_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                etp_local: self.external_local(svc, spec, problems),
                hairpin: self.hairpin(svc, opts, problems),
            },
            ranges: self.source_ranges(svc, problems),
        })
    }

    /// Scheduler, flags and affinity: what every virtual service of the
    /// Service shares. None when the scheduler is bad (the Service is
    /// skipped).
    fn template(&self, svc: &Service, problems: &mut Vec<Problem>) -> Option<Template> {
        let ann = &svc.metadata.annotations;
        let scheduler = match annotations::scheduler(ann) {
            Ok(s) => s,
            Err(e) => {
                problems.push(self.problem(e.field, e.message, true));
                return None;
            }
        };
        let mut flags = ServiceFlags::default();
        match annotations::sched_flags(ann) {
            Ok(Some((_, f))) if matches!(scheduler.as_str(), "sh" | "mh") => flags = f,
            Ok(Some((field, _))) => problems.push(self.problem(
                field,
                format!("scheduler flags only apply to sh and mh, not {scheduler}; ignored"),
                false,
            )),
            Ok(None) => {}
            Err(e) => problems.push(self.problem(e.field, e.message, false)),
        }
        let timeout = self.affinity(svc, problems);
        flags.persistent = timeout > 0;
        Some(Template {
            scheduler,
            flags,
            timeout,
            service: self.service.clone(),
        })
    }

    /// The annotation, else the flag; a bad annotation is reported and
    /// the flag decides.
    fn hairpin(&self, svc: &Service, opts: &Options, problems: &mut Vec<Problem>) -> bool {
        let ann = &svc.metadata.annotations;
        // Only checked: our hairpin covers the externalIPs already.
        self.read(annotations::hairpin_external_ips(ann), None, problems);
        self.read(annotations::hairpin(ann), None, problems)
            .unwrap_or(opts.hairpin_all)
    }

    /// externalTrafficPolicy Local, by the spec or forced by the
    /// `service.local` annotation. internalTrafficPolicy stays the spec's,
    /// and so does the health check (the API server allocates its port for
    /// policy Local only: none is invented).
    fn external_local(
        &self,
        svc: &Service,
        spec: &ServiceSpec,
        problems: &mut Vec<Problem>,
    ) -> bool {
        let forced = self.read(
            annotations::local(&svc.metadata.annotations),
            false,
            problems,
        );
        forced || spec.external_traffic_policy.as_deref() == Some("Local")
    }

    /// An annotation's value, or `default` with the bad value reported
    /// (the rest of the Service is programmed).
    pub(super) fn read<T>(
        &self,
        value: Result<T, annotations::AnnotationError>,
        default: T,
        problems: &mut Vec<Problem>,
    ) -> T {
        value.unwrap_or_else(|e| {
            problems.push(self.problem(e.field, e.message, false));
            default
        })
    }

    /// ClientIP affinity timeout in seconds, 0 without affinity.
    fn affinity(&self, svc: &Service, problems: &mut Vec<Problem>) -> u32 {
        let Some(spec) = &svc.spec else { return 0 };
        if spec.session_affinity.as_deref() != Some("ClientIP") {
            return 0;
        }
        match spec.affinity_timeout_seconds {
            None => DEFAULT_AFFINITY_SECONDS,
            Some(t) if (1..=86_400).contains(&t) => t as u32,
            Some(t) => {
                problems.push(self.problem(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds".into(),
                    format!("{t} is not in 1..86400; using {DEFAULT_AFFINITY_SECONDS}"),
                    false,
                ));
                DEFAULT_AFFINITY_SECONDS
            }
        }
    }

    fn source_ranges(&self, svc: &Service, problems: &mut Vec<Problem>) -> Vec<IpNet> {
        let ranges = svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_source_ranges.as_ref());
        let mut out = Vec::new();
        for (i, r) in ranges.into_iter().flatten().enumerate() {
            match r.trim().parse::<IpNet>() {
                Ok(net) => out.push(net.trunc()),
                // Leaving a bad range out only narrows who may connect.
                Err(_) => problems.push(self.problem(
                    format!("spec.loadBalancerSourceRanges[{i}]"),
                    format!("{r:?} is not a CIDR"),
                    true,
                )),
            }
        }
        out
    }
}

/// What every frontend of one Service shares.
pub(super) struct ServiceWide {
    pub(super) template: Template,
    pub(super) policy: TrafficPolicy,
    /// loadBalancerSourceRanges.
    pub(super) ranges: Vec<IpNet>,
}

/// Traffic policies and hairpin of one Service.
pub(super) struct TrafficPolicy {
    itp_local: bool,
    pub(super) etp_local: bool,
    pub(super) hairpin: bool,
}

impl TrafficPolicy {
    /// Does a frontend of `kind` go to this node's endpoints only?
    pub(super) fn local_only(&self, kind: FrontendKind) -> bool {
        if kind.external() {
            self.etp_local
        } else {
            self.itp_local
        }
    }
}

/// What every virtual service of a Service shares.
pub(super) struct Template {
    scheduler: String,
    flags: ServiceFlags,
    timeout: u32,
    service: ServiceRef,
}

impl Template {
    pub(super) fn with(
        &self,
        key: VsKey,
        destinations: Vec<RealServer>,
        origin: String,
    ) -> VirtualService {
        VirtualService {
            key,
            scheduler: self.scheduler.clone(),
            flags: self.flags,
            timeout: self.timeout,
            netmask_bits: if key.addr.is_ipv4() { 32 } else { 128 },
            destinations,
            service: self.service.clone(),
            origin,
            source_ranges: false,
        }
    }
}
