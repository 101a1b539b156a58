//! Netlink messages (`struct nlmsghdr` and the 4-byte family header that
//! follows it: `genlmsghdr` or `nfgenmsg`), both ways, without allocating:
//! `begin`/`finish` frame a request in a batch buffer; `frames` splits a
//! received datagram into messages and `Frame::reply` says what each
//! means. Every length is checked, so arbitrary bytes give an error,
//! never a panic.

use super::{align4, nla::Attrs, DecodeError, Writer};

/// `sizeof(struct nlmsghdr)`.
pub(crate) const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct genlmsghdr)` = `sizeof(struct nfgenmsg)`.
pub(crate) const FAMILY_HDRLEN: usize = 4;

pub(crate) const NLMSG_NOOP: u16 = 1;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_OVERRUN: u16 = 4;
/// Generic netlink controller (`GENL_ID_CTRL`).
pub(crate) const GENL_ID_CTRL: u16 = 0x10;

pub(crate) const NLM_F_REQUEST: u16 = 0x001;
pub(crate) const NLM_F_ACK: u16 = 0x004;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
/// The dump met a concurrent change: what it read may be mixed.
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x010;
/// On an error message: the echoed request was cut to its header.
pub(crate) const NLM_F_CAPPED: u16 = 0x100;
/// On an error message: extended-ack attributes follow.
pub(crate) const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the kernel's human-readable reason.
pub(crate) const NLMSGERR_ATTR_MSG: u16 = 1;

/// Starts a message in `buf`: `nlmsghdr` with a placeholder length (see
/// [`finish`]) and the family header. Port id 0: the kernel routes
/// replies by the socket's own. Returns the message's offset.
pub(crate) fn begin(
    buf: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family_hdr: [u8; 4],
) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&family_hdr);
    start
}

/// Writes the length of the message that starts at `start`.
pub(crate) fn finish(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// Appends one whole message: `nlmsghdr`, the family header (its first 4
/// bytes as [`begin`] writes them, the rest of a longer one, such as
/// rtnetlink's, after them), what `attrs` writes, then the length.
pub(crate) fn message(
    buf: &mut Vec<u8>,
    (ty, flags, seq): (u16, u16, u32),
    header: &[u8],
    attrs: impl FnOnce(&mut Writer),
) {
    let (first, rest) = header.split_at(FAMILY_HDRLEN);
    let first = first.try_into().expect("split at FAMILY_HDRLEN");
    let start = begin(buf, ty, flags, seq, first);
    buf.extend_from_slice(rest);
    attrs(&mut Writer::new(buf));
    finish(buf, start);
}

/// One netlink message of a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Iterates the messages of a datagram. After the first malformed one it
/// yields that error and stops.
pub(crate) struct Frames<'a> {
    rest: &'a [u8],
}

pub(crate) fn frames(buf: &[u8]) -> Frames<'_> {
    Frames { rest: buf }
}

/// The host-order u32 at the start of `b` (a length, an errno, an index).
pub(crate) fn ne_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let buf = std::mem::take(&mut self.rest);
        let Some(hdr) = buf.get(..NLMSG_HDRLEN) else {
            return Some(Err(DecodeError::Truncated {
                what: "nlmsghdr",
                need: NLMSG_HDRLEN,
                have: buf.len(),
            }));
        };
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Some(Err(DecodeError::Truncated {
                what: "message",
                need: len.max(NLMSG_HDRLEN),
                have: buf.len(),
            }));
        }
        let frame = Frame {
            ty: u16::from_ne_bytes([hdr[4], hdr[5]]),
            flags: u16::from_ne_bytes([hdr[6], hdr[7]]),
            seq: u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        self.rest = buf.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(frame))
    }
}

/// What a message means to a waiting request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply<'a> {
    /// NLMSG_ERROR with error 0.
    Ack,
    /// NLMSG_ERROR with a negative errno (stored positive here), or a
    /// dump that ended with one.
    Error { errno: i32, extack: Option<String> },
    /// NLMSG_DONE: end of a dump.
    Done,
    /// A family's message: the first byte of its family header (the
    /// generic netlink command) and its attribute bytes.
    Data { cmd: u8, attrs: &'a [u8] },
    /// NOOP or OVERRUN: nothing to act on.
    Ignore,
}

impl<'a> Frame<'a> {
    pub(crate) fn reply(&self) -> Result<Reply<'a>, DecodeError> {
        match self.ty {
            NLMSG_ERROR => {
                let code = self.code("nlmsgerr")?;
                if code == 0 {
                    return Ok(Reply::Ack);
                }
                Ok(Reply::Error {
                    errno: positive(code)?,
                    extack: self.extack_message(),
                })
            }
            // With a payload, DONE carries the dump's final status.
            NLMSG_DONE => match self.code("done status") {
                Ok(code) if code < 0 => Ok(Reply::Error {
                    errno: positive(code)?,
                    extack: None,
                }),
                _ => Ok(Reply::Done),
            },
            NLMSG_NOOP | NLMSG_OVERRUN => Ok(Reply::Ignore),
            _ => match self.payload.get(FAMILY_HDRLEN..) {
                Some(attrs) => Ok(Reply::Data {
                    cmd: self.payload[0],
                    attrs,
                }),
                None => Err(DecodeError::Truncated {
                    what: "family header",
                    need: FAMILY_HDRLEN,
                    have: self.payload.len(),
                }),
            },
        }
    }

    fn code(&self, what: &'static str) -> Result<i32, DecodeError> {
        ne_u32(self.payload)
            .map(|v| v as i32)
            .ok_or(DecodeError::Truncated {
                what,
                need: 4,
                have: self.payload.len(),
            })
    }

    /// The request an error message echoes: its header, and its payload
    /// unless the kernel capped it. Empty when there is none.
    pub(crate) fn echoed(&self) -> &'a [u8] {
        let echoed = self.payload.get(4..).unwrap_or(&[]);
        let len = if self.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            ne_u32(echoed).unwrap_or(0) as usize
        };
        &echoed[..len.min(echoed.len())]
    }

    /// The extended-ack text after the echoed request, if any. Best effort:
    /// a malformed trailer loses the text, not the error.
    fn extack_message(&self) -> Option<String> {
        if self.flags & NLM_F_ACK_TLVS == 0 {
            return None;
        }
        let tlvs = self.payload.get(4 + align4(self.echoed().len())..)?;
        let msg = Attrs::new(tlvs)
            .map_while(Result::ok)
            .find(|a| a.ty == NLMSGERR_ATTR_MSG)?;
        msg.str().ok().map(str::to_owned)
    }
}

fn positive(code: i32) -> Result<i32, DecodeError> {
    code.checked_neg().ok_or(DecodeError::Value {
        what: "netlink error code",
        value: u64::from(code.unsigned_abs()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let start = begin(&mut v, ty, flags, seq, [0; 4]);
        v.truncate(start + NLMSG_HDRLEN);
        v.extend_from_slice(payload);
        finish(&mut v, start);
        v.resize(align4(v.len()), 0);
        v
    }

    #[test]
    fn splits_ack_error_done_and_data() {
        let mut buf = msg(NLMSG_ERROR, 0, 7, &[0; 20]);
        let mut err = (-libc::EEXIST).to_ne_bytes().to_vec();
        err.extend_from_slice(&[0; 16]);
        buf.extend(msg(NLMSG_ERROR, 0, 8, &err));
        buf.extend(msg(NLMSG_DONE, 2, 9, &[0; 4]));
        buf.extend(msg(0x20, 2, 10, &[5, 1, 0, 0, 4, 0, 1, 0]));
        buf.extend(msg(NLMSG_DONE, 2, 11, &(-libc::EINTR).to_ne_bytes()));
        let got: Vec<_> = frames(&buf)
            .map(|f| {
                let f = f.unwrap();
                (f.seq, f.reply().unwrap())
            })
            .collect();
        let error = |errno| Reply::Error {
            errno,
            extack: None,
        };
        assert_eq!(
            got,
            [
                (7, Reply::Ack),
                (8, error(libc::EEXIST)),
                (9, Reply::Done),
                (
                    10,
                    Reply::Data {
                        cmd: 5,
                        attrs: &[4, 0, 1, 0][..]
                    }
                ),
                (11, error(libc::EINTR)),
            ]
        );
    }

    #[test]
    fn reads_the_extack_message_of_a_capped_error() {
        let mut p = (-libc::EINVAL).to_ne_bytes().to_vec();
        p.extend_from_slice(&[0; 16]); // echoed request header only
        p.extend_from_slice(&[8, 0, 1, 0]); // NLMSGERR_ATTR_MSG, len 8
        p.extend_from_slice(b"bad\0");
        let buf = msg(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 1, &p);
        let f = frames(&buf).next().unwrap().unwrap();
        assert_eq!(
            f.reply().unwrap(),
            Reply::Error {
                errno: libc::EINVAL,
                extack: Some("bad".into())
            }
        );
        assert_eq!(f.echoed().len(), NLMSG_HDRLEN);
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(frames(&[1, 2, 3]).next().unwrap().is_err());
        let mut buf = msg(NLMSG_DONE, 0, 1, &[]);
        buf[0] = 200; // claims more than there is
        assert!(frames(&buf).next().unwrap().is_err());
        buf[0] = 4; // shorter than a header
        assert!(frames(&buf).next().unwrap().is_err());
        let f = msg(0x20, 0, 1, &[1, 2]);
        assert!(frames(&f).next().unwrap().unwrap().reply().is_err());
    }
}
