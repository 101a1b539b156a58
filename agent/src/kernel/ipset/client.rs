//! The socket side: one nfnetlink socket, requests sent in batches (many
//! messages per sendmsg), replies matched to requests by sequence number.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    mem::size_of,
    os::fd::{AsRawFd, RawFd},
    time::Duration,
};

use neli::{
    consts::socket::{Msg, NlFamily},
    socket::NlSocket,
    utils::Groups,
};

use super::{
    consts::cmd,
    error::{classify, IpsetError, KernelRefusal, Op, Target},
    member::Element,
    message::{self, Adt, AdtMessage, ErrorReply, ListDecoder, ListDepth, Reply, UnsupportedSet},
    nla::DecodeError,
    request::Request,
    types::{from_nfproto, parse_set_type, CreateSet, IpSet, SetName},
};
use crate::desired::{Family, SetType};

/// Big enough for any reply: dump messages are at most 32 KiB, and the
/// error reply to an ADT message echoes the whole request (<= 64 KiB).
const RECV_BUF: usize = 256 * 1024;
/// Socket buffers asked for (the kernel doubles them). A batch's replies
/// must all fit in the receive buffer: the kernel queues them before
/// sendmsg returns.
const WANT_SNDBUF: libc::c_int = 4 << 20;
const WANT_RCVBUF: libc::c_int = 8 << 20;
/// Upper bound of one sendmsg; larger buys nothing measurable.
const MAX_BATCH: usize = 1 << 20;
/// A kernel that never answers must not hang the agent.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What `list_all` found: the sets ipwarden can read, and the names of the
/// others (bitmap, list:set, hash:mac, ...).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub sets: Vec<IpSet>,
    pub unsupported: Vec<UnsupportedSet>,
}

/// The ipset client: owns one netlink socket. Each method is one ipset
/// command; [`IpsetClient::execute`] runs a [`Request`] value.
pub struct IpsetClient {
    sock: NlSocket,
    seq: u32,
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
    /// Bytes per sendmsg, from the socket buffers we actually got.
    batch_bytes: usize,
    /// Highest revision the kernel has per type and family (kernel
    /// capabilities, not set contents, so safe to keep).
    revisions: HashMap<(SetType, Family), u8>,
}

impl IpsetClient {
    /// Opens a NETLINK_NETFILTER socket in the calling thread's network
    /// namespace.
    pub fn new() -> Result<Self, IpsetError> {
        let io_err = |source| IpsetError::Io {
            op: Op::Connect,
            set: String::new(),
            source,
        };
        let sock = NlSocket::connect(NlFamily::Netfilter, None, Groups::empty()).map_err(io_err)?;
        sock.block().map_err(io_err)?;
        let fd = sock.as_raw_fd();
        // Best effort: errors without these still work, just less precisely
        // (no extack text; CAP_ACK keeps refusals from echoing requests).
        let _ = sock.enable_ext_ack(true);
        let _ = set_int(fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        // FORCE variants need CAP_NET_ADMIN, which ipset needs anyway; the
        // plain ones are capped by net.core.[rw]mem_max.
        if set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, WANT_SNDBUF).is_err() {
            let _ = set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, WANT_SNDBUF);
        }
        if set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, WANT_RCVBUF).is_err() {
            let _ = set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, WANT_RCVBUF);
        }
        set_timeout(fd, REPLY_TIMEOUT).map_err(io_err)?;
        let sndbuf = get_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).map_err(io_err)?;
        let rcvbuf = get_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF).map_err(io_err)?;
        Ok(Self {
            sock,
            seq: 1,
            recv_buf: vec![0; RECV_BUF],
            send_buf: Vec::new(),
            batch_bytes: batch_bytes(sndbuf, rcvbuf),
            revisions: HashMap::new(),
        })
    }

    /// Runs one request.
    pub fn execute(&mut self, req: &Request) -> Result<(), IpsetError> {
        match req {
            Request::Create { spec, exist_ok } => self.create(spec, *exist_ok),
            Request::Destroy { set, missing_ok } => self.destroy(set, *missing_ok),
            Request::Flush { set } => self.flush(set),
            Request::Rename { from, to } => self.rename(from, to),
            Request::Swap { a, b } => self.swap(a, b),
            Request::Add {
                set,
                members,
                exist_ok,
            } => self.add(set, members, *exist_ok),
            Request::Del {
                set,
                members,
                missing_ok,
            } => self.del(set, members, *missing_ok),
        }
    }

    /// Runs requests in order, stopping at the first error.
    pub fn execute_all<'r>(
        &mut self,
        reqs: impl IntoIterator<Item = &'r Request>,
    ) -> Result<(), IpsetError> {
        reqs.into_iter().try_for_each(|r| self.execute(r))
    }

    /// `ipset create` (`-exist` when `exist_ok`), at the highest revision
    /// of the type the kernel has, as the ipset CLI does.
    pub fn create(&mut self, spec: &CreateSet, exist_ok: bool) -> Result<(), IpsetError> {
        let t = Target {
            op: Op::Create,
            set: spec.name.as_str(),
            set2: None,
            set_type: Some(spec.set_type),
        };
        let revision = self.revision(t, spec.set_type, spec.family)?;
        let seq = self.next_seq(1);
        let mut buf = Vec::new();
        message::create(&mut buf, seq, spec, revision, exist_ok);
        self.transact(t, &buf, seq).map(drop)
    }

    /// `ipset destroy NAME` (`-exist` when `missing_ok`).
    pub fn destroy(&mut self, set: &SetName, missing_ok: bool) -> Result<(), IpsetError> {
        self.named(Op::Destroy, cmd::DESTROY, set, missing_ok)
    }

    /// `ipset flush NAME`.
    pub fn flush(&mut self, set: &SetName) -> Result<(), IpsetError> {
        self.named(Op::Flush, cmd::FLUSH, set, false)
    }

    /// `ipset rename FROM TO`.
    pub fn rename(&mut self, from: &SetName, to: &SetName) -> Result<(), IpsetError> {
        self.two_names(Op::Rename, cmd::RENAME, from, to)
    }

    /// `ipset swap A B`.
    pub fn swap(&mut self, a: &SetName, b: &SetName) -> Result<(), IpsetError> {
        self.two_names(Op::Swap, cmd::SWAP, a, b)
    }

    /// `ipset add` of many members (`-exist` when `exist_ok`). Members are
    /// checked against the set's type and family first, then sent in as
    /// few messages as the kernel's 64 KiB-per-message limit allows, many
    /// messages per sendmsg. Not atomic: on an error, the members of other
    /// messages already sent stay added (use a temporary set and `swap` for
    /// all-or-nothing).
    pub fn add(
        &mut self,
        set: &SetName,
        members: &[Element],
        exist_ok: bool,
    ) -> Result<(), IpsetError> {
        self.adt(Adt::Add, set, members, exist_ok)
    }

    /// `ipset del` of many members (`-exist` when `missing_ok`); same
    /// batching and caveat as [`IpsetClient::add`].
    pub fn del(
        &mut self,
        set: &SetName,
        members: &[Element],
        missing_ok: bool,
    ) -> Result<(), IpsetError> {
        self.adt(Adt::Del, set, members, missing_ok)
    }

    /// `ipset save NAME` / `ipset list NAME`: one set with its members.
    pub fn list(&mut self, set: &SetName) -> Result<IpSet, IpsetError> {
        self.list_one(set, ListDepth::Members)
    }

    /// `ipset list -t NAME`: one set's header and counts, no members.
    pub fn list_header(&mut self, set: &SetName) -> Result<IpSet, IpsetError> {
        self.list_one(set, ListDepth::Header)
    }

    fn list_one(&mut self, set: &SetName, depth: ListDepth) -> Result<IpSet, IpsetError> {
        let t = target(Op::List, set.as_str());
        let mut d = self.dump(t, Some(set), depth)?;
        if let Some(u) = d.unsupported.pop() {
            return Err(IpsetError::WrongType {
                op: Op::List,
                set: u.name,
                detail: format!("{} set not readable: {}", u.type_name, u.reason),
                errno: None,
            });
        }
        d.sets.pop().ok_or_else(|| IpsetError::Decode {
            op: Op::List,
            set: set.to_string(),
            source: DecodeError::Missing { what: "set" },
        })
    }

    /// `ipset save`: every set with its members.
    pub fn list_all(&mut self) -> Result<Listing, IpsetError> {
        let d = self.dump(target(Op::List, ""), None, ListDepth::Members)?;
        Ok(Listing {
            sets: d.sets,
            unsupported: d.unsupported,
        })
    }

    /// `ipset list -t`: every set's header and counts, no members.
    pub fn list_headers(&mut self) -> Result<Listing, IpsetError> {
        let d = self.dump(target(Op::List, ""), None, ListDepth::Header)?;
        Ok(Listing {
            sets: d.sets,
            unsupported: d.unsupported,
        })
    }

    /// `ipset list -n`: the names of all sets, of any type.
    pub fn list_names(&mut self) -> Result<Vec<String>, IpsetError> {
        Ok(self
            .dump(target(Op::List, ""), None, ListDepth::Names)?
            .names)
    }

    /// The type and family of an existing set (IPSET_CMD_HEADER).
    pub fn set_type(&mut self, set: &SetName) -> Result<(SetType, Family), IpsetError> {
        let t = target(Op::Header, set.as_str());
        let seq = self.next_seq(1);
        let mut buf = Vec::new();
        message::named(&mut buf, seq, cmd::HEADER, set, false);
        let replies = self.transact(t, &buf, seq)?;
        let attrs = replies
            .first()
            .ok_or_else(|| decode_err(t, DecodeError::Missing { what: "header" }))?;
        let (typename, fam, _) =
            message::decode_header_reply(attrs).map_err(|e| decode_err(t, e))?;
        let unsupported = || IpsetError::WrongType {
            op: Op::Header,
            set: set.to_string(),
            detail: format!("set type {typename} family {fam} is not one ipwarden writes"),
            errno: None,
        };
        let set_type = parse_set_type(&typename).map_err(|_| unsupported())?;
        let family = from_nfproto(fam).ok_or_else(unsupported)?;
        Ok((set_type, family))
    }

    fn next_seq(&mut self, n: usize) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n as u32);
        s
    }

    fn named(
        &mut self,
        op: Op,
        command: u8,
        set: &SetName,
        exist_ok: bool,
    ) -> Result<(), IpsetError> {
        let seq = self.next_seq(1);
        let mut buf = Vec::new();
        message::named(&mut buf, seq, command, set, exist_ok);
        self.transact(target(op, set.as_str()), &buf, seq).map(drop)
    }

    fn two_names(
        &mut self,
        op: Op,
        command: u8,
        a: &SetName,
        b: &SetName,
    ) -> Result<(), IpsetError> {
        let seq = self.next_seq(1);
        let mut buf = Vec::new();
        message::two_names(&mut buf, seq, command, a, b);
        let t = Target {
            op,
            set: a.as_str(),
            set2: Some(b.as_str()),
            set_type: None,
        };
        self.transact(t, &buf, seq).map(drop)
    }

    fn revision(
        &mut self,
        t: Target<'_>,
        set_type: SetType,
        family: Family,
    ) -> Result<u8, IpsetError> {
        if let Some(r) = self.revisions.get(&(set_type, family)) {
            return Ok(*r);
        }
        let seq = self.next_seq(1);
        let mut buf = Vec::new();
        message::type_query(&mut buf, seq, set_type, family);
        let t = Target { op: Op::Type, ..t };
        let replies = self.transact(t, &buf, seq)?;
        let attrs = replies
            .first()
            .ok_or_else(|| decode_err(t, DecodeError::Missing { what: "type reply" }))?;
        let (max, _min) = message::decode_type_reply(attrs).map_err(|e| decode_err(t, e))?;
        self.revisions.insert((set_type, family), max);
        Ok(max)
    }

    fn adt(
        &mut self,
        op: Adt,
        set: &SetName,
        members: &[Element],
        exist_ok: bool,
    ) -> Result<(), IpsetError> {
        let kind = match op {
            Adt::Add => Op::Add,
            Adt::Del => Op::Del,
        };
        if members.is_empty() {
            return Ok(());
        }
        let (set_type, family) = self.set_type(set).map_err(|e| retag(e, kind))?;
        for m in members {
            let why = m.entry.mismatch(set_type, family).or_else(|| {
                (m.nomatch && !set_type.has_nomatch())
                    .then(|| format!("{set_type} has no nomatch members"))
            });
            if let Some(detail) = why {
                return Err(IpsetError::WrongType {
                    op: kind,
                    set: set.to_string(),
                    detail: format!("{}: {detail}", m.entry),
                    errno: None,
                });
            }
        }
        let t = Target {
            op: kind,
            set: set.as_str(),
            set2: None,
            set_type: Some(set_type),
        };
        let mut buf = std::mem::take(&mut self.send_buf);
        buf.clear();
        let first_seq = self.seq;
        let msgs = message::adt(
            &mut buf,
            op,
            set,
            members,
            exist_ok,
            first_seq,
            message::MAX_ADT_NEST,
        );
        self.next_seq(msgs.len());
        let result = self.send_adt(t, &buf, &msgs, members);
        self.send_buf = buf;
        result
    }

    /// Sends the messages in sendmsg-sized batches, each batch's replies
    /// collected before the next goes out; stops after a batch with an error.
    fn send_adt(
        &mut self,
        t: Target<'_>,
        buf: &[u8],
        msgs: &[AdtMessage],
        members: &[Element],
    ) -> Result<(), IpsetError> {
        let mut i = 0;
        while i < msgs.len() {
            let start = msgs[i].bytes.start;
            let mut j = i + 1;
            while j < msgs.len() && msgs[j].bytes.end - start <= self.batch_bytes {
                j += 1;
            }
            self.send(t, &buf[start..msgs[j - 1].bytes.end])?;
            let seqs: Vec<u32> = msgs[i..j].iter().map(|m| m.seq).collect();
            if let Some((seq, e)) = self.collect_acks(t, &seqs)? {
                let member = msgs[i..j]
                    .iter()
                    .find(|m| m.seq == seq)
                    .zip(e.lineno)
                    .and_then(|(m, line)| {
                        let idx = m.members.start + (line as usize).checked_sub(1)?;
                        m.members
                            .contains(&idx)
                            .then(|| Box::new(members[idx].clone()))
                    });
                return Err(refused(t, e, member));
            }
            i = j;
        }
        Ok(())
    }

    /// Waits for one ACK or error per sequence number; returns the first
    /// error in message order.
    fn collect_acks(
        &mut self,
        t: Target<'_>,
        seqs: &[u32],
    ) -> Result<Option<(u32, ErrorReply)>, IpsetError> {
        let mut pending: BTreeMap<u32, usize> =
            seqs.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        let mut first: Option<(usize, u32, ErrorReply)> = None;
        while !pending.is_empty() {
            let n = self.recv(t)?;
            for r in message::replies(&self.recv_buf[..n]) {
                let (seq, err) = match r.map_err(|e| decode_err(t, e))? {
                    Reply::Ack { seq } => (seq, None),
                    Reply::Error(e) => (e.seq, Some(e)),
                    _ => continue,
                };
                let Some(pos) = pending.remove(&seq) else {
                    continue;
                };
                if let Some(e) = err {
                    // nfnetlink refuses a whole sendmsg without CAP_NET_ADMIN
                    // with one EPERM: no other reply will come.
                    let fatal = e.errno == libc::EPERM;
                    if first.as_ref().is_none_or(|(p, _, _)| pos < *p) {
                        first = Some((pos, seq, e));
                    }
                    if fatal {
                        pending.clear();
                    }
                }
            }
        }
        Ok(first.map(|(_, seq, e)| (seq, e)))
    }

    /// Sends one request, waits for its ACK; returns the attributes of the
    /// ipset messages that answered it first (header, type replies).
    fn transact(
        &mut self,
        t: Target<'_>,
        msg: &[u8],
        seq: u32,
    ) -> Result<Vec<Vec<u8>>, IpsetError> {
        self.send(t, msg)?;
        let mut out = Vec::new();
        loop {
            let n = self.recv(t)?;
            for r in message::replies(&self.recv_buf[..n]) {
                match r.map_err(|e| decode_err(t, e))? {
                    Reply::Ack { seq: s } if s == seq => return Ok(out),
                    Reply::Error(e) if e.seq == seq => return Err(refused(t, e, None)),
                    Reply::Ipset { seq: s, attrs, .. } if s == seq => out.push(attrs.to_vec()),
                    _ => {}
                }
            }
        }
    }

    /// A LIST dump: every message until NLMSG_DONE.
    fn dump(
        &mut self,
        t: Target<'_>,
        set: Option<&SetName>,
        depth: ListDepth,
    ) -> Result<ListDecoder, IpsetError> {
        let seq = self.next_seq(1);
        let mut buf = Vec::new();
        message::list(&mut buf, seq, set, depth);
        self.send(t, &buf)?;
        let mut d = ListDecoder::default();
        loop {
            let n = self.recv(t)?;
            for r in message::replies(&self.recv_buf[..n]) {
                match r.map_err(|e| decode_err(t, e))? {
                    Reply::Ipset {
                        seq: s,
                        cmd: cmd::LIST,
                        attrs,
                    } if s == seq => d.feed(attrs).map_err(|e| decode_err(t, e))?,
                    Reply::Done { seq: s, errno } if s == seq => {
                        if errno < 0 {
                            let e = ErrorReply {
                                seq,
                                errno: -errno,
                                lineno: None,
                                extack: None,
                            };
                            return Err(refused(t, e, None));
                        }
                        return Ok(d);
                    }
                    Reply::Error(e) if e.seq == seq => return Err(refused(t, e, None)),
                    _ => {}
                }
            }
        }
    }

    fn send(&mut self, t: Target<'_>, bytes: &[u8]) -> Result<(), IpsetError> {
        loop {
            match self.sock.send(bytes, Msg::empty()) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    return Err(io_error(
                        t,
                        io::Error::other(format!("short send: {n} of {} bytes", bytes.len())),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(t, e)),
            }
        }
    }

    /// Receives one datagram into `recv_buf`; MSG_TRUNC makes a reply too
    /// big for the buffer an error instead of a silently cut message.
    fn recv(&mut self, t: Target<'_>) -> Result<usize, IpsetError> {
        loop {
            match self.sock.recv(&mut self.recv_buf[..], Msg::TRUNC) {
                Ok((n, _)) if n > self.recv_buf.len() => {
                    return Err(decode_err(
                        t,
                        DecodeError::Truncated {
                            what: "datagram",
                            need: n,
                            have: self.recv_buf.len(),
                        },
                    ))
                }
                Ok((n, _)) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io_error(
                        t,
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no reply from the kernel within {REPLY_TIMEOUT:?}"),
                        ),
                    ))
                }
                Err(e) => return Err(io_error(t, e)),
            }
        }
    }
}

fn target(op: Op, set: &str) -> Target<'_> {
    Target {
        op,
        set,
        set2: None,
        set_type: None,
    }
}

fn refused(t: Target<'_>, e: ErrorReply, member: Option<Box<Element>>) -> IpsetError {
    classify(
        t,
        KernelRefusal {
            errno: e.errno,
            member,
            extack: e.extack,
        },
    )
}

fn decode_err(t: Target<'_>, source: DecodeError) -> IpsetError {
    IpsetError::Decode {
        op: t.op,
        set: t.set.to_owned(),
        source,
    }
}

fn io_error(t: Target<'_>, source: io::Error) -> IpsetError {
    IpsetError::Io {
        op: t.op,
        set: t.set.to_owned(),
        source,
    }
}

/// An error of the header lookup an add/del starts with, named as the
/// add/del it belongs to.
fn retag(e: IpsetError, op: Op) -> IpsetError {
    match e {
        IpsetError::SetMissing { set, errno, .. } => IpsetError::SetMissing { op, set, errno },
        IpsetError::WrongType {
            set, detail, errno, ..
        } => IpsetError::WrongType {
            op,
            set,
            detail,
            errno,
        },
        other => other,
    }
}

/// How many bytes of requests one sendmsg may carry: under the send buffer
/// (netlink_sendmsg refuses more than sk_sndbuf - 32) and under half the
/// receive buffer (every message may be answered by an error echoing it),
/// and never less than one full message.
fn batch_bytes(sndbuf: libc::c_int, rcvbuf: libc::c_int) -> usize {
    let snd = usize::try_from(sndbuf).unwrap_or(0).saturating_sub(1024);
    let rcv = usize::try_from(rcvbuf).unwrap_or(0) / 2;
    snd.min(rcv).clamp(message::MAX_ADT_NEST + 1024, MAX_BATCH)
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `fd` is the open socket owned by the caller; the option value
    // points at a live c_int of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as in set_int; the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn set_timeout(fd: RawFd, d: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: as in set_int, with a timeval.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_errors_cross_threads() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync + 'static>() {}
        send::<IpsetClient>();
        send_sync::<IpsetError>();
    }

    #[test]
    fn batches_fit_both_socket_buffers() {
        // Root defaults here: FORCE gives 8 MiB / 16 MiB (doubled).
        assert_eq!(batch_bytes(8 << 20, 16 << 20), MAX_BATCH);
        // Unprivileged defaults (212992 doubled is 425984).
        assert_eq!(batch_bytes(425_984, 425_984), 212_992);
        // Never below one full message.
        assert!(batch_bytes(4096, 4096) > message::MAX_ADT_NEST);
    }
}
