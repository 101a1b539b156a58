//! One Service's part of the desired state, as the keyed table keeps it
//! for every Service: sized to what it holds, since at 10k Services each
//! byte here is 10 KB. Built as [`ShareParts`], then packed.

use crate::desired::{HealthCheck, Problem, ServiceRef, VirtualService, VsKey};

use super::{NatException, SourceRestriction, Unserved};

/// One Service's part of the desired state: what a partial sync recomputes
/// when that Service or its EndpointSlices change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceShare {
    /// Each virtual service, and whether its address is a VIP to hold on
    /// ipwarden0 (not a NodePort on a node address). A boxed slice: a
    /// `Vec` of one would keep room for four.
    pub virtual_services: Box<[(VirtualService, bool)]>,
    /// The rest, which most Services lack: one pointer when empty.
    rare: Option<Box<Rare>>,
}

/// What a Service has besides its virtual services, most often nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rare {
    restrictions: Vec<SourceRestriction>,
    unserved: Vec<Unserved>,
    nat: Vec<NatException>,
    health_check: Option<HealthCheck>,
    problems: Vec<Problem>,
}

/// A share while it is computed.
#[derive(Debug, Default)]
pub struct ShareParts {
    pub virtual_services: Vec<(VirtualService, bool)>,
    pub restrictions: Vec<SourceRestriction>,
    /// Frontends of traffic policy Local without a local endpoint.
    pub unserved: Vec<Unserved>,
    /// Hairpin and client-source exceptions to the masquerade.
    pub nat: Vec<NatException>,
    pub health_check: Option<HealthCheck>,
    pub problems: Vec<Problem>,
}

impl From<ShareParts> for ServiceShare {
    fn from(p: ShareParts) -> Self {
        let rare = Rare {
            restrictions: p.restrictions,
            unserved: p.unserved,
            nat: p.nat,
            health_check: p.health_check,
            problems: p.problems,
        };
        Self {
            virtual_services: p.virtual_services.into_boxed_slice(),
            rare: (rare != Rare::default()).then(|| Box::new(rare)),
        }
    }
}

impl ServiceShare {
    /// The Service as its virtual services name it: the table keys it by
    /// that same shared pair of strings.
    pub fn service(&self) -> Option<&ServiceRef> {
        self.virtual_services.first().map(|(vs, _)| &vs.service)
    }

    pub fn keys(&self) -> impl Iterator<Item = VsKey> + '_ {
        self.virtual_services.iter().map(|(vs, _)| vs.key)
    }

    pub fn restrictions(&self) -> &[SourceRestriction] {
        self.rare.as_ref().map_or(&[], |r| &r.restrictions)
    }

    /// Frontends of traffic policy Local without a local endpoint.
    pub fn unserved(&self) -> &[Unserved] {
        self.rare.as_ref().map_or(&[], |r| &r.unserved)
    }

    /// Hairpin and client-source exceptions to the masquerade.
    pub fn nat(&self) -> &[NatException] {
        self.rare.as_ref().map_or(&[], |r| &r.nat)
    }

    pub fn health_check(&self) -> Option<&HealthCheck> {
        self.rare.as_ref().and_then(|r| r.health_check.as_ref())
    }

    pub fn problems(&self) -> &[Problem] {
        self.rare.as_ref().map_or(&[], |r| &r.problems)
    }
}
