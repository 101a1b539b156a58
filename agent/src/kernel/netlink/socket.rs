//! The one netlink socket type of kernel/: requests go out as byte
//! batches, answers are filed back by sequence number, the kernel's
//! extended-ack text travels with its errno, and dumps are read to their
//! end. Socket options go through `nix` and netlink-sys, whose safe calls
//! replace the hand-written setsockopt blocks kernel/ had.
//!
//! A socket belongs to the network namespace of the thread that opened it.

use std::{io, time::Duration};

use netlink_sys::Socket as RawSocket;
use nix::sys::{
    socket::{getsockopt, setsockopt, sockopt},
    time::TimeVal,
};

use super::{frame::NLM_F_DUMP_INTR, frames, DecodeError, Frame, Reply};

pub(crate) use netlink_sys::protocols::{NETLINK_GENERIC, NETLINK_NETFILTER};

/// Upper bound of the kernel memory one queued ack costs (skb truesize).
const ACK_TRUESIZE: usize = 1024;

/// What a socket asks of the kernel when it opens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Receive buffer wanted, if the default is too small: a batch's
    /// answers are queued before we read.
    pub rcvbuf: Option<usize>,
    /// Send buffer wanted, if the default (about 200 KiB) is too small.
    pub sndbuf: Option<usize>,
    /// A kernel that has not answered by then is not going to.
    pub timeout: Duration,
    /// Our own buffer for one datagram: more than the largest answer.
    pub datagram: usize,
}

/// The kernel refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// Positive errno.
    pub errno: i32,
    /// `NLMSGERR_ATTR_MSG`: the kernel's reason, when it gave one.
    pub extack: Option<String>,
}

/// How one exchange failed, before a family names it.
/// What one request's answer was, beyond its messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Exchanged {
    /// A dump met a concurrent change (`NLM_F_DUMP_INTR`).
    pub interrupted: bool,
    /// How many datagrams carried data messages: a dump that took one was
    /// walked by the kernel in one go.
    pub data_datagrams: usize,
}

#[derive(Debug)]
pub(crate) enum Failure {
    Refused(Refusal),
    Io(io::Error),
    Decode(DecodeError),
}

/// One netlink socket and its receive buffer.
pub(crate) struct Socket {
    sock: RawSocket,
    seq: u32,
    timeout: Duration,
    recv_buf: Vec<u8>,
}

impl Socket {
    pub(crate) fn open(protocol: isize, opts: &Options) -> io::Result<Self> {
        let mut sock = RawSocket::new(protocol)?;
        sock.bind_auto()?;
        // Best effort: errors then carry the kernel's text, and refusals do
        // not echo whole requests. Old kernels lacking either still work.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        // FORCE needs CAP_NET_ADMIN, which every family here needs anyway;
        // the plain option is capped by net.core.[rw]mem_max.
        if let Some(want) = opts.rcvbuf {
            if setsockopt(&sock, sockopt::RcvBufForce, &want).is_err() {
                let _ = setsockopt(&sock, sockopt::RcvBuf, &want);
            }
        }
        if let Some(want) = opts.sndbuf {
            if setsockopt(&sock, sockopt::SndBufForce, &want).is_err() {
                let _ = setsockopt(&sock, sockopt::SndBuf, &want);
            }
        }
        let secs = i64::try_from(opts.timeout.as_secs()).unwrap_or(i64::MAX);
        setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(secs, 0))?;
        Ok(Socket {
            sock,
            seq: 1,
            timeout: opts.timeout,
            recv_buf: vec![0; opts.datagram],
        })
    }

    /// The receive buffer the kernel granted (it doubles what was asked).
    pub(crate) fn rcvbuf(&self) -> usize {
        getsockopt(&self.sock, sockopt::RcvBuf).unwrap_or(0)
    }

    /// How many requests one datagram may carry, at most `max`: half the
    /// acks the receive buffer holds, since the kernel queues every ack
    /// before `sendmsg` returns (more and the last ones are lost, ENOBUFS).
    pub(crate) fn acks_room(&self, max: usize) -> usize {
        (self.rcvbuf() / ACK_TRUESIZE / 2).clamp(16, max)
    }

    /// The send buffer the kernel granted.
    pub(crate) fn sndbuf(&self) -> usize {
        getsockopt(&self.sock, sockopt::SndBuf).unwrap_or(0)
    }

    /// Reserves `n` consecutive sequence numbers and returns the first.
    /// Plain wrapping: batches rely on consecutive numbers.
    pub(crate) fn next_seq(&mut self, n: usize) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(n as u32);
        first
    }

    /// Sends `bytes` (one or many messages) in one datagram.
    pub(crate) fn send(&self, bytes: &[u8]) -> io::Result<()> {
        loop {
            match self.sock.send(bytes, 0) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "short send: {n} of {} bytes",
                        bytes.len()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// One datagram into the receive buffer; returns its length. MSG_TRUNC
    /// makes a datagram too big for the buffer an error instead of a
    /// silently cut message.
    fn recv(&mut self) -> io::Result<usize> {
        loop {
            let mut buf = &mut self.recv_buf[..];
            match self.sock.recv(&mut buf, libc::MSG_TRUNC) {
                Ok(n) if n > self.recv_buf.len() => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "netlink datagram of {n} bytes exceeds the receive buffer of {}",
                            self.recv_buf.len()
                        ),
                    ))
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from the kernel within {:?}", self.timeout),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends one request (`seq`) and feeds each family message answering
    /// it to `on_data`, until its ack, the end of a dump, a refusal or,
    /// when `single`, the first message (a query without an ack). A dump
    /// is read to its end even after `on_data` fails, so the next dump on
    /// this socket is not refused as busy; the first such error is
    /// returned. `Ok(true)` says a dump met a concurrent change
    /// (`NLM_F_DUMP_INTR`): what it read may be mixed.
    pub(crate) fn transact(
        &mut self,
        request: &[u8],
        seq: u32,
        single: bool,
        on_data: impl FnMut(&Frame<'_>, &[u8]) -> Result<(), DecodeError>,
    ) -> Result<bool, Failure> {
        self.exchange(request, seq, single, on_data)
            .map(|e| e.interrupted)
    }

    /// As [`Socket::transact`], also saying how many datagrams carried
    /// the answer's messages.
    pub(crate) fn exchange(
        &mut self,
        request: &[u8],
        seq: u32,
        single: bool,
        mut on_data: impl FnMut(&Frame<'_>, &[u8]) -> Result<(), DecodeError>,
    ) -> Result<Exchanged, Failure> {
        self.send(request).map_err(Failure::Io)?;
        let mut first_err = None;
        let mut done = Exchanged::default();
        loop {
            let n = self.recv().map_err(Failure::Io)?;
            let mut data_here = false;
            for frame in frames(&self.recv_buf[..n]) {
                let frame = frame.map_err(Failure::Decode)?;
                if frame.seq != seq {
                    tracing::debug!(
                        seq = frame.seq,
                        "netlink: ignoring a message for no request"
                    );
                    continue;
                }
                done.interrupted |= frame.flags & NLM_F_DUMP_INTR != 0;
                let last = match frame.reply().map_err(Failure::Decode)? {
                    Reply::Data { attrs, .. } => {
                        if !data_here {
                            data_here = true;
                            done.data_datagrams += 1;
                        }
                        if let Err(e) = on_data(&frame, attrs) {
                            first_err.get_or_insert(e);
                        }
                        single
                    }
                    Reply::Error { errno, extack } => {
                        return Err(Failure::Refused(Refusal { errno, extack }))
                    }
                    Reply::Done | Reply::Ack => true,
                    Reply::Ignore => false,
                };
                if last {
                    return first_err.map_or(Ok(done), |e| Err(Failure::Decode(e)));
                }
            }
        }
    }

    /// Sends a batch whose requests carry consecutive sequence numbers from
    /// `first` and waits for the ack or refusal of each request `i` with
    /// `waiting[i]` set, handing it to `file(i, frame, answer)`. Answers
    /// for no waiting request (a stale batch's, a second one) are skipped.
    /// `file` returns false when no further answer will come (nfnetlink
    /// refuses a whole unprivileged batch with one EPERM).
    pub(crate) fn batch(
        &mut self,
        request: &[u8],
        first: u32,
        waiting: Vec<bool>,
        mut file: impl FnMut(usize, &Frame<'_>, Result<(), Refusal>) -> bool,
    ) -> Result<(), Failure> {
        self.send(request).map_err(Failure::Io)?;
        let mut pending = Pending::new(first, waiting);
        while !pending.is_empty() {
            let n = self.recv().map_err(Failure::Io)?;
            for frame in frames(&self.recv_buf[..n]) {
                let frame = frame.map_err(Failure::Decode)?;
                let Some((i, answer)) = pending.file(&frame).map_err(Failure::Decode)? else {
                    continue;
                };
                if !file(i, &frame, answer) {
                    pending.clear();
                }
            }
        }
        Ok(())
    }
}

/// A request of a batch (its index) and what the kernel answered.
type Answer = (usize, Result<(), Refusal>);

/// The requests of a batch still waiting for an answer, by sequence
/// number: request `i` went out as `first + i` (wrapping).
struct Pending {
    first: u32,
    waiting: Vec<bool>,
    left: usize,
}

impl Pending {
    fn new(first: u32, waiting: Vec<bool>) -> Self {
        let left = waiting.iter().filter(|w| **w).count();
        Pending {
            first,
            waiting,
            left,
        }
    }

    fn is_empty(&self) -> bool {
        self.left == 0
    }

    fn clear(&mut self) {
        self.left = 0;
    }

    /// The request `frame` answers, and the answer. `None` for messages
    /// that are no answer, and for answers to no waiting request.
    fn file(&mut self, frame: &Frame<'_>) -> Result<Option<Answer>, DecodeError> {
        let answer = match frame.reply()? {
            Reply::Ack => Ok(()),
            Reply::Error { errno, extack } => Err(Refusal { errno, extack }),
            _ => return Ok(None),
        };
        let i = frame.seq.wrapping_sub(self.first) as usize;
        let Some(slot @ true) = self.waiting.get_mut(i) else {
            tracing::debug!(
                seq = frame.seq,
                "netlink: ignoring a message for no request"
            );
            return Ok(None);
        };
        *slot = false;
        self.left -= 1;
        Ok(Some((i, answer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: u32, errno: i32) -> Vec<u8> {
        let mut v = Vec::new();
        let start = super::super::begin(&mut v, super::super::frame::NLMSG_ERROR, 0, seq, [0; 4]);
        v.truncate(start + 16);
        v.extend_from_slice(&(-errno).to_ne_bytes());
        v.extend_from_slice(&[0; 16]);
        super::super::finish(&mut v, start);
        v
    }

    #[test]
    fn answers_are_filed_by_sequence_number_across_wraparound() {
        let first = u32::MAX - 1; // the batch is MAX-1, MAX, 0, 1
        let mut pending = Pending::new(first, vec![true; 4]);
        let mut buf = Vec::new();
        for (seq, errno) in [(1, 0), (first, libc::EEXIST), (7, 0), (0, 0), (1, 0)] {
            buf.extend(ack(seq, errno));
        }
        let filed: Vec<_> = frames(&buf)
            .map(|f| pending.file(&f.unwrap()).unwrap())
            .collect();
        let refusal = Refusal {
            errno: libc::EEXIST,
            extack: None,
        };
        // seq 7 belongs to no request; the second answer for seq 1 is stale.
        assert_eq!(
            filed,
            [
                Some((3, Ok(()))),
                Some((0, Err(refusal))),
                None,
                Some((2, Ok(()))),
                None
            ]
        );
        assert!(!pending.is_empty(), "seq MAX was never answered");
    }

    #[test]
    fn requests_that_never_went_out_wait_for_nothing() {
        let mut pending = Pending::new(5, vec![false, true]);
        let buf = ack(5, 0);
        let f = frames(&buf).next().unwrap().unwrap();
        assert_eq!(pending.file(&f).unwrap(), None);
        assert!(!pending.is_empty());
    }
}
