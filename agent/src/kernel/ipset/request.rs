//! ipset requests as plain values: built first, logged as a plan, then run
//! by one [`IpsetClient`](super::IpsetClient). Nothing here touches a socket.

use std::fmt;

use super::{
    member::Element,
    types::{CreateSet, SetName},
};

/// One ipset operation. `exist_ok` / `missing_ok` are ipset's `-exist`:
/// "already there" (create, add) or "already gone" (destroy, del) is then
/// success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `ipset create`. With `exist_ok`, an existing set of the same type
    /// and options is success; one that differs is still an error.
    Create { spec: CreateSet, exist_ok: bool },
    /// `ipset destroy NAME`.
    Destroy { set: SetName, missing_ok: bool },
    /// `ipset flush NAME`.
    Flush { set: SetName },
    /// `ipset rename FROM TO`.
    Rename { from: SetName, to: SetName },
    /// `ipset swap A B`: the two sets trade names, atomically for packets.
    Swap { a: SetName, b: SetName },
    /// `ipset add`, many members in as few netlink messages as fit.
    Add {
        set: SetName,
        members: Vec<Element>,
        exist_ok: bool,
    },
    /// `ipset del`, many members; only the element part is sent.
    Del {
        set: SetName,
        members: Vec<Element>,
        missing_ok: bool,
    },
}

impl Request {
    pub fn create(spec: CreateSet) -> Self {
        Request::Create {
            spec,
            exist_ok: false,
        }
    }

    pub fn destroy(set: SetName) -> Self {
        Request::Destroy {
            set,
            missing_ok: false,
        }
    }

    pub fn flush(set: SetName) -> Self {
        Request::Flush { set }
    }

    pub fn rename(from: SetName, to: SetName) -> Self {
        Request::Rename { from, to }
    }

    pub fn swap(a: SetName, b: SetName) -> Self {
        Request::Swap { a, b }
    }

    pub fn add(set: SetName, members: impl IntoIterator<Item = Element>) -> Self {
        Request::Add {
            set,
            members: members.into_iter().collect(),
            exist_ok: false,
        }
    }

    pub fn del(set: SetName, members: impl IntoIterator<Item = Element>) -> Self {
        Request::Del {
            set,
            members: members.into_iter().collect(),
            missing_ok: false,
        }
    }

    /// ipset's `-exist`: tolerate what already exists (create, add) or is
    /// already gone (destroy, del). No effect on flush, rename, swap.
    pub fn exist_ok(mut self) -> Self {
        match &mut self {
            Request::Create { exist_ok, .. } | Request::Add { exist_ok, .. } => *exist_ok = true,
            Request::Destroy { missing_ok, .. } | Request::Del { missing_ok, .. } => {
                *missing_ok = true
            }
            Request::Flush { .. } | Request::Rename { .. } | Request::Swap { .. } => {}
        }
        self
    }

    /// The set the request is about (the first one of rename and swap).
    pub fn set(&self) -> &SetName {
        match self {
            Request::Create { spec, .. } => &spec.name,
            Request::Destroy { set, .. }
            | Request::Flush { set }
            | Request::Add { set, .. }
            | Request::Del { set, .. } => set,
            Request::Rename { from, .. } => from,
            Request::Swap { a, .. } => a,
        }
    }

    /// The request as `ipset restore` input, one line per member: feeding
    /// it to `ipset restore` (with `-exist` where `exist_ok`) does the same.
    pub fn restore_lines(&self) -> String {
        match self {
            Request::Add { set, members, .. } => {
                members.iter().map(|m| format!("add {set} {m}\n")).collect()
            }
            Request::Del { set, members, .. } => members
                .iter()
                .map(|m| format!("del {set} {}\n", m.entry))
                .collect(),
            other => format!("{other}\n"),
        }
    }
}

/// One line per request in restore syntax, members summarised: what a
/// log should show.
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exist = |on: bool| if on { " (-exist)" } else { "" };
        match self {
            Request::Create { spec, .. } => write!(f, "{spec}"),
            Request::Destroy { set, .. } => write!(f, "destroy {set}"),
            Request::Flush { set } => write!(f, "flush {set}"),
            Request::Rename { from, to } => write!(f, "rename {from} {to}"),
            Request::Swap { a, b } => write!(f, "swap {a} {b}"),
            Request::Add {
                set,
                members,
                exist_ok: on,
            }
            | Request::Del {
                set,
                members,
                missing_ok: on,
            } => {
                let verb = if matches!(self, Request::Add { .. }) {
                    "add"
                } else {
                    "del"
                };
                write!(f, "{verb} {set}: {} members{}", members.len(), exist(*on))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Family, SetType};

    fn name(s: &str) -> SetName {
        SetName::new(s).unwrap()
    }

    #[test]
    fn requests_print_as_a_plan() {
        let spec = CreateSet::new(name("s"), SetType::HashIp, Family::V4).maxelem(4);
        assert_eq!(
            Request::create(spec).exist_ok().to_string(),
            "create s hash:ip family inet maxelem 4"
        );
        let members = ["10.0.0.1", "10.0.0.2"].map(|m| Element::parse(SetType::HashIp, m).unwrap());
        let add = Request::add(name("s"), members).exist_ok();
        assert_eq!(add.to_string(), "add s: 2 members (-exist)");
        assert_eq!(add.restore_lines(), "add s 10.0.0.1\nadd s 10.0.0.2\n");
        assert_eq!(
            Request::swap(name("a"), name("b")).restore_lines(),
            "swap a b\n"
        );
        assert_eq!(add.set().as_str(), "s");
    }
}
