//! Netlink attributes (`struct nlattr`): a writer that appends them to a
//! message buffer, a reader that walks them without ever indexing out of
//! bounds, and a table that indexes one level by a family's typed enum.

use std::marker::PhantomData;

use super::{align4, DecodeError};

/// `NLA_HDRLEN`: nla_len (u16) + nla_type (u16).
pub(crate) const NLA_HDRLEN: usize = 4;
/// Netlink attribute header flags (linux/netlink.h).
pub(crate) const NLA_F_NESTED: u16 = 1 << 15;
pub(crate) const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
pub(crate) const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);
/// `nla_len` is a u16, so one attribute (a nest included) holds at most
/// this many bytes.
pub(crate) const NLA_MAX_LEN: usize = u16::MAX as usize;

/// Appends attributes to `buf`. Nests are closed with the offset that
/// [`Writer::nest_start`] returned.
pub(crate) struct Writer<'a> {
    pub buf: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Self {
        Self { buf }
    }

    pub(crate) fn put(&mut self, ty: impl Into<u16>, payload: &[u8]) {
        self.put_parts(ty, &[payload]);
    }

    /// A NUL-terminated string (`NLA_NUL_STRING`).
    pub(crate) fn put_str(&mut self, ty: impl Into<u16>, s: &str) {
        self.put_parts(ty, &[s.as_bytes(), &[0]]);
    }

    /// One attribute whose payload is `parts` in a row. Payloads are at
    /// most a comment (255 bytes); nests are bounded by their writers, so
    /// the u16 length cannot truncate.
    fn put_parts(&mut self, ty: impl Into<u16>, parts: &[&[u8]]) {
        let len = NLA_HDRLEN + parts.iter().map(|p| p.len()).sum::<usize>();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.into().to_ne_bytes());
        parts.iter().for_each(|p| self.buf.extend_from_slice(p));
        self.pad();
    }

    /// Opens a nest flagged `NLA_F_NESTED`; returns its offset for `nest_end`.
    pub(crate) fn nest_start(&mut self, ty: impl Into<u16>) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty.into() | NLA_F_NESTED).to_ne_bytes());
        at
    }

    /// Writes the nest's length. The caller keeps it under `NLA_MAX_LEN`.
    pub(crate) fn nest_end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        let padded = align4(self.buf.len());
        self.buf.resize(padded, 0);
    }
}

/// Defines `Writer::NAME(ty, v)`: `v` in `$to` order, the type flagged
/// `$flag` if given.
macro_rules! writers {
    ($($(#[$doc:meta])* $name:ident($int:ty) = $to:ident $(| $flag:ident)?;)*) => {
        impl Writer<'_> {
            $($(#[$doc])*
            pub(crate) fn $name(&mut self, ty: impl Into<u16>, v: $int) {
                self.put(ty.into() $(| $flag)?, &v.$to());
            })*
        }
    };
}

writers! {
    put_u8(u8) = to_ne_bytes;
    /// A host-order u16.
    put_u16(u16) = to_ne_bytes;
    /// A host-order u32.
    put_u32(u32) = to_ne_bytes;
    /// A big-endian u16 flagged `NLA_F_NET_BYTEORDER` (ports).
    put_be16(u16) = to_be_bytes | NLA_F_NET_BYTEORDER;
    /// A big-endian u32 flagged `NLA_F_NET_BYTEORDER` (timeouts, sizes, flags).
    put_be32(u32) = to_be_bytes | NLA_F_NET_BYTEORDER;
    /// A big-endian u64 flagged `NLA_F_NET_BYTEORDER` (counters).
    put_be64(u64) = to_be_bytes | NLA_F_NET_BYTEORDER;
}

/// One attribute as read: its type without the flag bits, its payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr<'a> {
    pub ty: u16,
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    pub(crate) fn is(&self, ty: impl Into<u16>) -> bool {
        self.ty == ty.into()
    }

    /// A string up to its first NUL; must be UTF-8.
    pub(crate) fn str(&self) -> Result<&'a str, DecodeError> {
        let end = self
            .payload
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.payload.len());
        std::str::from_utf8(&self.payload[..end]).map_err(|e| DecodeError::BadValue {
            ty: self.ty,
            reason: e.to_string(),
        })
    }

    /// Exactly `N` payload bytes (IPv6 address) or the leading `N` of a
    /// longer payload; fewer is an error.
    pub(crate) fn array<const N: usize>(&self) -> Result<[u8; N], DecodeError> {
        self.payload
            .get(..N)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(DecodeError::BadLength {
                ty: self.ty,
                expected: N,
                got: self.payload.len(),
            })
    }

    /// The attributes nested in this one.
    pub(crate) fn nested(&self) -> Attrs<'a> {
        Attrs::new(self.payload)
    }
}

/// Defines `Attr::NAME()`: the payload's leading bytes as `$int` in
/// `$from` order; fewer bytes are an error.
macro_rules! readers {
    ($($(#[$doc:meta])* $name:ident -> $int:ty = $from:ident;)*) => {
        impl Attr<'_> {
            $($(#[$doc])*
            pub(crate) fn $name(&self) -> Result<$int, DecodeError> {
                Ok(<$int>::$from(self.array()?))
            })*
        }
    };
}

readers! {
    u8 -> u8 = from_ne_bytes;
    /// Host-order u16.
    u16 -> u16 = from_ne_bytes;
    /// Host-order u32.
    u32 -> u32 = from_ne_bytes;
    /// Big-endian u16 (the kernel writes ports with nla_put_net16).
    be16 -> u16 = from_be_bytes;
    /// Big-endian u32 (nla_put_net32).
    be32 -> u32 = from_be_bytes;
    /// Big-endian u64 (nla_put_net64).
    be64 -> u64 = from_be_bytes;
}

/// Iterator over the attributes of a byte string. A malformed header ends
/// the walk with one `Err`.
pub(crate) struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < NLA_HDRLEN {
            // Trailing padding shorter than a header is legal; anything
            // non-zero there is not an attribute either way.
            self.rest = &[];
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([self.rest[0], self.rest[1]]));
        let ty = u16::from_ne_bytes([self.rest[2], self.rest[3]]);
        if len < NLA_HDRLEN || len > self.rest.len() {
            let have = self.rest.len();
            self.rest = &[];
            return Some(Err(DecodeError::Truncated {
                what: "attribute",
                need: len.max(NLA_HDRLEN),
                have,
            }));
        }
        let payload = &self.rest[NLA_HDRLEN..len];
        let next = align4(len).min(self.rest.len());
        self.rest = &self.rest[next..];
        Some(Ok(Attr {
            ty: ty & NLA_TYPE_MASK,
            payload,
        }))
    }
}

/// Attributes of one level, indexed by a family's typed enum like the
/// kernel's `nla_parse`: the last of a type wins, types past the table
/// are ignored (newer kernels may add them).
pub(crate) struct AttrTable<'a, T> {
    slots: [Option<Attr<'a>>; 32],
    _type: PhantomData<T>,
}

impl<'a, T: Into<u16>> AttrTable<'a, T> {
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut slots = [None; 32];
        for a in Attrs::new(bytes) {
            let a = a?;
            if let Some(slot) = slots.get_mut(usize::from(a.ty)) {
                *slot = Some(a);
            }
        }
        Ok(AttrTable {
            slots,
            _type: PhantomData,
        })
    }

    pub(crate) fn get(&self, ty: T) -> Option<Attr<'a>> {
        self.slots.get(usize::from(ty.into())).copied().flatten()
    }

    pub(crate) fn need(&self, ty: T, what: &'static str) -> Result<Attr<'a>, DecodeError> {
        self.get(ty).ok_or(DecodeError::Missing { what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_pads_and_nests() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        let at = w.nest_start(7u16);
        w.put_u8(3u16, 24);
        w.put_be16(4u16, 80);
        w.nest_end(at);
        assert_eq!(
            buf,
            [
                20, 0, 7, 0x80, // nest: len 20, DATA | NLA_F_NESTED
                5, 0, 3, 0, 24, 0, 0, 0, // CIDR u8 24, 3 bytes padding
                6, 0, 4, 0x40, 0, 80, 0, 0, // PORT be16 80 | NET_BYTEORDER
            ]
        );
        let outer: Vec<_> = Attrs::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(outer.len(), 1);
        assert_eq!(outer[0].ty, 7);
        let inner: Vec<_> = outer[0].nested().collect::<Result<_, _>>().unwrap();
        assert_eq!(inner[0].u8().unwrap(), 24);
        assert_eq!(inner[1].ty, 4);
        assert_eq!(inner[1].be16().unwrap(), 80);
    }

    #[test]
    fn strings_carry_their_nul() {
        let mut buf = Vec::new();
        Writer::new(&mut buf).put_str(2u16, "abc");
        assert_eq!(buf, [8, 0, 2, 0, b'a', b'b', b'c', 0]);
        let a = Attrs::new(&buf).next().unwrap().unwrap();
        assert_eq!(a.str().unwrap(), "abc");
    }

    #[test]
    fn a_length_past_the_end_is_an_error() {
        let buf = [9, 0, 1, 0, 1, 2, 3, 4];
        let got: Vec<_> = Attrs::new(&buf).collect();
        assert!(matches!(got[..], [Err(DecodeError::Truncated { .. })]));
        let buf = [2, 0, 1, 0];
        assert!(Attrs::new(&buf).next().unwrap().is_err());
    }

    #[test]
    fn short_payloads_are_errors_not_panics() {
        let buf = [5, 0, 6, 0, 1, 0, 0, 0];
        let a = Attrs::new(&buf).next().unwrap().unwrap();
        assert!(matches!(a.be32(), Err(DecodeError::BadLength { .. })));
        assert!(a.array::<16>().is_err());
        assert_eq!(a.u8().unwrap(), 1);
    }

    #[test]
    fn the_table_keeps_the_last_of_a_type_and_ignores_unknown_ones() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.put_u32(1u16, 5);
        w.put_u32(1u16, 6);
        w.put_u32(40u16, 7);
        let t: AttrTable<u16> = AttrTable::parse(&buf).unwrap();
        assert_eq!(t.need(1, "one").unwrap().u32().unwrap(), 6);
        assert!(matches!(
            t.need(2, "two"),
            Err(DecodeError::Missing { what: "two" })
        ));
    }
}
