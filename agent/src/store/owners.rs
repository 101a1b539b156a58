//! Who owns which sets. Every set has exactly one owner; nothing outside
//! our prefixes can be claimed, so no apply can ever name another program's
//! set.

/// Prefixes of every set ipwarden may touch (IPv6 twins add `inet6:`).
pub(crate) const OUR_PREFIXES: &[&str] = &["ipwarden-", "IPW-"];
const INET6: &str = "inet6:";

/// A claim on set names, covering both families: `Name("ipwarden-svip")`
/// also owns `inet6:ipwarden-svip`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    Name(String),
    Prefix(String),
}

impl Claim {
    /// Does this claim cover `set`, in either family, including the
    /// `.new` name a replacement uses for a moment?
    pub fn covers(&self, set: &str) -> bool {
        let base = set.strip_prefix(INET6).unwrap_or(set);
        let base = base.strip_suffix(".new").unwrap_or(base);
        match self {
            Claim::Name(n) => base == n,
            Claim::Prefix(p) => base.starts_with(p.as_str()),
        }
    }

    fn text(&self) -> &str {
        match self {
            Claim::Name(n) | Claim::Prefix(n) => n,
        }
    }

    fn overlaps(&self, other: &Claim) -> bool {
        match (self, other) {
            (Claim::Name(a), Claim::Name(b)) => a == b,
            (Claim::Name(n), Claim::Prefix(p)) | (Claim::Prefix(p), Claim::Name(n)) => {
                n.starts_with(p.as_str())
            }
            (Claim::Prefix(a), Claim::Prefix(b)) => {
                a.starts_with(b.as_str()) || b.starts_with(a.as_str())
            }
        }
    }
}

/// Is `set` named like one of ours (whoever owns it)?
pub(crate) fn has_our_prefix(set: &str) -> bool {
    let base = set.strip_prefix(INET6).unwrap_or(set);
    OUR_PREFIXES.iter().any(|p| base.starts_with(p))
}

/// One owner's registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub name: &'static str,
    pub claims: Vec<Claim>,
    /// Sets whose desired content is handed to the mirror after each apply.
    pub mirrored: Vec<String>,
}

impl Owner {
    pub fn new(name: &'static str, claims: Vec<Claim>) -> Self {
        Self {
            name,
            claims,
            mirrored: Vec::new(),
        }
    }

    pub fn mirror(mut self, sets: &[&str]) -> Self {
        self.mirrored = sets.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn owns(&self, set: &str) -> bool {
        self.claims.iter().any(|c| c.covers(set))
    }

    pub fn mirrors(&self, set: &str) -> bool {
        let base = set.strip_prefix(INET6).unwrap_or(set);
        self.mirrored.iter().any(|m| m == base)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OwnershipError {
    #[error("owner {owner}: claim {claim:?} is outside ipwarden's prefixes {OUR_PREFIXES:?}")]
    OutsidePrefix { owner: &'static str, claim: String },
    #[error("owner {owner}: claim {claim:?} overlaps owner {other}")]
    Overlap {
        owner: &'static str,
        claim: String,
        other: &'static str,
    },
    #[error("owner {0} is already registered")]
    Duplicate(&'static str),
}

/// Checks `new` against the owners already registered.
pub(crate) fn check(existing: &[Owner], new: &Owner) -> Result<(), OwnershipError> {
    if existing.iter().any(|o| o.name == new.name) {
        return Err(OwnershipError::Duplicate(new.name));
    }
    for c in &new.claims {
        if !has_our_prefix(c.text()) {
            return Err(OwnershipError::OutsidePrefix {
                owner: new.name,
                claim: c.text().to_string(),
            });
        }
        for o in existing {
            if o.claims.iter().any(|oc| oc.overlaps(c)) {
                return Err(OwnershipError::Overlap {
                    owner: new.name,
                    claim: c.text().to_string(),
                    other: o.name,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> Owner {
        Owner::new(
            "services",
            vec![
                Claim::Name("ipwarden-svip".into()),
                Claim::Name("ipwarden-svip-prt".into()),
                Claim::Name("ipwarden-local-ips".into()),
            ],
        )
    }

    #[test]
    fn claims_cover_both_families_and_nothing_else() {
        let s = services();
        assert!(s.owns("ipwarden-svip") && s.owns("inet6:ipwarden-svip"));
        assert!(!s.owns("ipwarden-svip2") && !s.owns("kube-router-svip"));
    }

    #[test]
    fn overlapping_and_foreign_claims_are_refused() {
        let existing = [services()];
        let policies = Owner::new("policies", vec![Claim::Prefix("IPW-".into())]);
        assert_eq!(check(&existing, &policies), Ok(()));
        let greedy = Owner::new("greedy", vec![Claim::Prefix("ipwarden-".into())]);
        assert!(matches!(
            check(&existing, &greedy),
            Err(OwnershipError::Overlap {
                other: "services",
                ..
            })
        ));
        let istio = Owner::new("istio", vec![Claim::Prefix("istio-".into())]);
        assert!(matches!(
            check(&existing, &istio),
            Err(OwnershipError::OutsidePrefix { .. })
        ));
        assert_eq!(
            check(&existing, &services()),
            Err(OwnershipError::Duplicate("services"))
        );
    }
}
