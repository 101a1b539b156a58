//! Why bytes from the kernel did not parse: one type for every family.

/// A malformed netlink message, attribute or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("attribute {ty}: expected {expected} bytes of payload, got {got}")]
    BadLength {
        ty: u16,
        expected: usize,
        got: usize,
    },
    #[error("attribute {ty}: {reason}")]
    BadValue { ty: u16, reason: String },
    #[error("{what}: unexpected value {value}")]
    Value { what: &'static str, value: u64 },
    #[error("missing attribute {what}")]
    Missing { what: &'static str },
    #[error("set {set}: members arrived before the set's header")]
    Orphan { set: String },
}
