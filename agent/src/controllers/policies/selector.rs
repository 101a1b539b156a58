//! Label selectors (matchLabels and matchExpressions), checked once when a
//! policy is read so matching itself cannot fail.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::cluster::compact::LabelMap;

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A checked selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// Why a selector is invalid, and where (relative to the selector).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorError {
    pub field: String,
    pub message: String,
}

impl Selector {
    /// Matches every object (`{}`).
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn parse(s: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in s.match_labels.iter().flatten() {
            requirements.push(Requirement::Equals(k.clone(), v.clone()));
        }
        for (i, e) in s.match_expressions.iter().flatten().enumerate() {
            let field = |f: &str| format!("matchExpressions[{i}]{f}");
            let values = e.values.clone().unwrap_or_default();
            let key = e.key.clone();
            let needs_values = |r: Requirement| {
                if values.is_empty() {
                    Err(SelectorError {
                        field: field(".values"),
                        message: format!("operator {} needs at least one value", e.operator),
                    })
                } else {
                    Ok(r)
                }
            };
            let no_values = |r: Requirement| {
                if values.is_empty() {
                    Ok(r)
                } else {
                    Err(SelectorError {
                        field: field(".values"),
                        message: format!("operator {} takes no values", e.operator),
                    })
                }
            };
            requirements.push(match e.operator.as_str() {
                "In" => needs_values(Requirement::In(key, values.clone()))?,
                "NotIn" => needs_values(Requirement::NotIn(key, values.clone()))?,
                "Exists" => no_values(Requirement::Exists(key))?,
                "DoesNotExist" => no_values(Requirement::DoesNotExist(key))?,
                other => {
                    return Err(SelectorError {
                        field: field(".operator"),
                        message: format!(
                            "unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
                        ),
                    })
                }
            });
        }
        Ok(Self { requirements })
    }

    /// Labels one of which every matching object carries: `(key, Some(value))`
    /// for `key=value` or `key in (...)`, `(key, None)` for `key` exists.
    /// `None` when the selector can match an object with none of them
    /// (`{}`, only `notin` and `!key`). The incremental policy index files
    /// a selector under these, so a pod change looks only at the selectors
    /// its labels can meet.
    pub fn anchors(&self) -> Option<Vec<(String, Option<String>)>> {
        self.requirements.iter().find_map(|r| match r {
            Requirement::Equals(k, v) => Some(vec![(k.clone(), Some(v.clone()))]),
            Requirement::In(k, vs) => {
                Some(vs.iter().map(|v| (k.clone(), Some(v.clone()))).collect())
            }
            Requirement::Exists(k) => Some(vec![(k.clone(), None)]),
            Requirement::NotIn(..) | Requirement::DoesNotExist(_) => None,
        })
    }

    /// Does an object with `labels` match? (All requirements must hold.)
    pub fn matches<L: LabelMap + ?Sized>(&self, labels: Option<&L>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.label(k));
        let any = |vs: &[String], v: &str| vs.iter().any(|x| x == v);
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|v| any(vs, v)),
            // Kubernetes: NotIn also matches objects without the label.
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !any(vs, v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

/// `{}` for the empty selector, else the requirements as kubectl writes
/// them: `app=web, tier in (a,b), !legacy`.
impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{}");
        }
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: (!values.is_empty())
                    .then(|| values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_labels: None,
        }
    }

    #[test]
    fn empty_selector_matches_everything_even_without_labels() {
        let s = Selector::parse(&LabelSelector::default()).unwrap();
        assert!(s.matches(None::<&BTreeMap<String, String>>));
        assert!(s.matches(Some(&labels(&[("a", "b")]))));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let mut sel = expr("tier", "In", &["web", "api"]);
        sel.match_labels = Some(labels(&[("app", "shop")]));
        let s = Selector::parse(&sel).unwrap();
        assert!(s.matches(Some(&labels(&[("app", "shop"), ("tier", "web")]))));
        assert!(!s.matches(Some(&labels(&[("app", "shop"), ("tier", "db")]))));
        assert!(!s.matches(Some(&labels(&[("tier", "web")]))));
    }

    #[test]
    fn not_in_matches_a_missing_label_and_does_not_exist_only_missing() {
        let not_in = Selector::parse(&expr("tier", "NotIn", &["db"])).unwrap();
        assert!(not_in.matches(None::<&BTreeMap<String, String>>));
        assert!(not_in.matches(Some(&labels(&[("tier", "web")]))));
        assert!(!not_in.matches(Some(&labels(&[("tier", "db")]))));
        let dne = Selector::parse(&expr("tier", "DoesNotExist", &[])).unwrap();
        assert!(dne.matches(None::<&BTreeMap<String, String>>));
        assert!(!dne.matches(Some(&labels(&[("tier", "")]))));
        let exists = Selector::parse(&expr("tier", "Exists", &[])).unwrap();
        assert!(exists.matches(Some(&labels(&[("tier", "")]))));
        assert!(!exists.matches(None::<&BTreeMap<String, String>>));
    }

    #[test]
    fn bad_operators_and_values_name_the_field() {
        let e = Selector::parse(&expr("tier", "Like", &["x"])).unwrap_err();
        assert_eq!(e.field, "matchExpressions[0].operator");
        let e = Selector::parse(&expr("tier", "In", &[])).unwrap_err();
        assert_eq!(e.field, "matchExpressions[0].values");
        let e = Selector::parse(&expr("tier", "Exists", &["x"])).unwrap_err();
        assert_eq!(e.field, "matchExpressions[0].values");
    }
}
