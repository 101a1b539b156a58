//! Typed ipset values: names, types, families, what to create and what the
//! kernel reports. Each checks its invariants when built and prints exactly
//! as `ipset save` does.

use std::{fmt, str::FromStr};

use super::{consts::IPSET_MAXNAMELEN, member::Element};
use crate::desired::{Family, SetType};

/// A string that is not a valid ipset value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {reason}")]
pub struct ParseError {
    pub what: &'static str,
    pub input: String,
    pub reason: String,
}

impl ParseError {
    pub fn new(what: &'static str, input: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            what,
            input: input.into(),
            reason: reason.into(),
        }
    }
}

/// A set name: 1 to 31 bytes (`IPSET_MAXNAMELEN` counts the NUL), without
/// whitespace, quotes or control characters so a save line stays parseable.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetName(String);

impl SetName {
    pub const MAX_LEN: usize = IPSET_MAXNAMELEN - 1;

    pub fn new(name: impl Into<String>) -> Result<Self, ParseError> {
        let name = name.into();
        let bad = |c: char| c.is_whitespace() || c.is_control() || c == '"';
        let why = match name {
            _ if name.is_empty() || name.len() > Self::MAX_LEN => "must be 1 to 31 bytes",
            _ if name.chars().any(bad) => "contains whitespace, a quote or a control character",
            _ => return Ok(Self(name)),
        };
        Err(ParseError::new("set name", name, why))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SetName {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::new(s)
    }
}

impl AsRef<str> for SetName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The set type named `s` (`hash:ip`, ...), if ipwarden speaks it.
pub(crate) fn parse_set_type(s: &str) -> Result<SetType, ParseError> {
    SetType::ALL
        .into_iter()
        .find(|t| t.name() == s)
        .ok_or_else(|| ParseError::new("set type", s, "not a type ipwarden supports"))
}

/// How a member of `set_type` is written, for error messages.
pub(crate) fn member_syntax(set_type: SetType) -> &'static str {
    match set_type {
        SetType::HashIp => "IP",
        SetType::HashIpPort => "IP,PROTO:PORT",
        SetType::HashNet => "IP[/CIDR]",
        SetType::HashNetPort => "IP[/CIDR],PROTO:PORT",
        SetType::HashIpPortIp => "IP,PROTO:PORT,IP",
    }
}

/// The family as `ipset save` writes it.
pub fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    }
}

/// What to create: `ipset create NAME TYPE family F [hashsize N]
/// [maxelem N] [timeout N] [counters] [comment]`. Unset sizes take the
/// kernel's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CreateSet {
    pub name: SetName,
    pub set_type: SetType,
    pub family: Family,
    pub hashsize: Option<u32>,
    pub maxelem: Option<u32>,
    /// Default member timeout in seconds; Some(0) enables timeouts with
    /// members that never expire unless given one.
    pub timeout: Option<u32>,
    pub counters: bool,
    pub comment: bool,
}

impl CreateSet {
    pub fn new(name: SetName, set_type: SetType, family: Family) -> Self {
        Self {
            name,
            set_type,
            family,
            hashsize: None,
            maxelem: None,
            timeout: None,
            counters: false,
            comment: false,
        }
    }

    pub fn hashsize(mut self, n: u32) -> Self {
        self.hashsize = Some(n);
        self
    }

    pub fn maxelem(mut self, n: u32) -> Self {
        self.maxelem = Some(n);
        self
    }

    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout = Some(seconds);
        self
    }

    pub fn counters(mut self) -> Self {
        self.counters = true;
        self
    }

    pub fn comment(mut self) -> Self {
        self.comment = true;
        self
    }
}

impl fmt::Display for CreateSet {
    /// The `ipset restore` line that creates the same set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = family_name(self.family);
        write!(f, "create {} {} family {family}", self.name, self.set_type)?;
        let numbers = [
            ("hashsize", self.hashsize),
            ("maxelem", self.maxelem),
            ("timeout", self.timeout),
        ];
        write_options(
            f,
            &numbers,
            &[(self.counters, "counters"), (self.comment, "comment")],
        )
    }
}

/// ` WORD N` for each number given, then ` WORD` for each flag that is on.
fn write_options(
    f: &mut fmt::Formatter<'_>,
    numbers: &[(&str, Option<u32>)],
    flags: &[(bool, &str)],
) -> fmt::Result {
    for (word, n) in numbers {
        n.map_or(Ok(()), |n| write!(f, " {word} {n}"))?;
    }
    for (on, word) in flags {
        if *on {
            write!(f, " {word}")?;
        }
    }
    Ok(())
}

/// A set's header as the kernel reports it: everything `ipset save` prints
/// after `create NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SetHeader {
    pub set_type: SetType,
    pub family: Family,
    /// The hash table's current size (it grows as members are added).
    pub hashsize: u32,
    pub maxelem: u32,
    /// Only for hash:ip created with a netmask (printed when not a host mask).
    pub netmask: Option<u8>,
    pub timeout: Option<u32>,
    pub counters: bool,
    pub comment: bool,
    /// skbinfo sets are listed with this flag, but member skb values are
    /// not decoded.
    pub skbinfo: bool,
    pub bucketsize: Option<u8>,
    pub initval: Option<u32>,
}

impl SetHeader {
    /// Only the type and family; everything else zero or off until read.
    pub(crate) fn bare(set_type: SetType, family: Family) -> Self {
        Self {
            set_type,
            family,
            hashsize: 0,
            maxelem: 0,
            netmask: None,
            timeout: None,
            counters: false,
            comment: false,
            skbinfo: false,
            bucketsize: None,
            initval: None,
        }
    }

    /// Whether a set with this header is what `spec` asked for (sizes the
    /// kernel rounds, like hashsize, are not compared).
    pub fn satisfies(&self, spec: &CreateSet) -> bool {
        self.set_type == spec.set_type
            && self.family == spec.family
            && spec.maxelem.is_none_or(|m| m == self.maxelem)
            && self.timeout == spec.timeout
            && self.counters == spec.counters
            && self.comment == spec.comment
    }
}

impl fmt::Display for SetHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (family, size) = (family_name(self.family), self.hashsize);
        write!(f, "{} family {family} hashsize {size}", self.set_type)?;
        let numbers = [
            ("maxelem", Some(self.maxelem)),
            ("netmask", self.netmask.map(u32::from)),
            ("timeout", self.timeout),
        ];
        let flags = [
            (self.counters, "counters"),
            (self.comment, "comment"),
            (self.skbinfo, "skbinfo"),
        ];
        write_options(f, &numbers, &flags)?;
        write_options(f, &[("bucketsize", self.bucketsize.map(u32::from))], &[])?;
        self.initval
            .map_or(Ok(()), |v| write!(f, " initval {v:#010x}"))
    }
}

/// List-only facts about a set (`ipset list` prints them, save does not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SetStats {
    pub revision: u8,
    /// Kernel references: iptables rules using the set, and list:set sets.
    pub references: u32,
    pub memsize: u32,
    /// Number of entries.
    pub entries: u32,
}

/// A set with its members, as listed or as parsed from `ipset save`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpSet {
    pub name: SetName,
    pub header: SetHeader,
    /// Present when read from the kernel.
    pub stats: Option<SetStats>,
    pub members: Vec<Element>,
}

impl fmt::Display for IpSet {
    /// Exactly the lines `ipset save NAME` prints, in member order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "create {} {}", self.name, self.header)?;
        for m in &self.members {
            writeln!(f, "add {} {m}", self.name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_names_check_the_kernel_limit() {
        assert!(SetName::new("a".repeat(31)).is_ok());
        assert!(SetName::new("a".repeat(32)).is_err());
        assert!(SetName::new("").is_err());
        assert!(SetName::new("has space").is_err());
        assert!(SetName::new("inet6:IPW-SRC-ABCDEF0123456789").is_ok());
    }

    #[test]
    fn spec_prints_a_restore_line() {
        let spec = CreateSet::new(SetName::new("x").unwrap(), SetType::HashNetPort, Family::V6)
            .maxelem(4)
            .timeout(0)
            .comment();
        assert_eq!(
            spec.to_string(),
            "create x hash:net,port family inet6 maxelem 4 timeout 0 comment"
        );
    }
}
