//! The socket side: one nfnetlink socket, requests sent in batches (many
//! messages per sendmsg), replies matched to requests by sequence number.

use std::{collections::HashMap, time::Duration};

use super::{
    consts::NFNL_SUBSYS_IPSET,
    error::{classify, failed, IpsetError, IpsetErrorKind, Op, Target},
    member::Element,
    message::{self, AdtMessage, ListDecoder, ListDepth, UnsupportedSet},
    request::Request,
    types::{parse_set_type, CreateSet, IpSet, SetName},
};
use crate::desired::{Family, SetType};
use crate::kernel::netlink::{
    family_of, socket::NETLINK_NETFILTER, DecodeError, Failure, Frame, Options, Refusal, Socket,
};

/// Big enough for any reply: dump messages are at most 32 KiB, and the
/// error reply to an ADT message echoes the whole request (<= 64 KiB).
const RECV_BUF: usize = 256 * 1024;
/// The largest request buffer kept for the next request: a first sync's
/// big adds grow it to 0.5 MiB at 10k, which the partial syncs after it
/// never need (BENCHMARKS.md, "Stop 20: peak RSS at 10k").
const KEEP_SEND_BUF: usize = 64 * 1024;
/// Socket buffers asked for (the kernel doubles them). A batch's replies
/// must all fit in the receive buffer: the kernel queues them before
/// sendmsg returns.
const WANT_SNDBUF: usize = 4 << 20;
const WANT_RCVBUF: usize = 8 << 20;
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
    sock: Socket,
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
        let opts = Options {
            rcvbuf: Some(WANT_RCVBUF),
            sndbuf: Some(WANT_SNDBUF),
            timeout: REPLY_TIMEOUT,
            datagram: RECV_BUF,
        };
        let sock = Socket::open(NETLINK_NETFILTER, &opts)
            .map_err(|e| failed(target(Op::Connect, ""), Failure::Io(e)))?;
        Ok(Self {
            batch_bytes: batch_bytes(sock.sndbuf(), sock.rcvbuf()),
            sock,
            send_buf: Vec::new(),
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
            set_type: Some(spec.set_type),
            ..target(Op::Create, spec.name.as_str())
        };
        let revision = self.revision(t, spec.set_type, spec.family)?;
        self.transact(t, |buf, seq| {
            message::create(buf, seq, spec, revision, exist_ok)
        })
        .map(drop)
    }

    /// `ipset destroy NAME` (`-exist` when `missing_ok`).
    pub fn destroy(&mut self, set: &SetName, missing_ok: bool) -> Result<(), IpsetError> {
        self.named(Op::Destroy, &[set], missing_ok)
    }

    /// `ipset flush NAME`.
    pub fn flush(&mut self, set: &SetName) -> Result<(), IpsetError> {
        self.named(Op::Flush, &[set], false)
    }

    /// `ipset rename FROM TO`.
    pub fn rename(&mut self, from: &SetName, to: &SetName) -> Result<(), IpsetError> {
        self.named(Op::Rename, &[from, to], false)
    }

    /// `ipset swap A B`.
    pub fn swap(&mut self, a: &SetName, b: &SetName) -> Result<(), IpsetError> {
        self.named(Op::Swap, &[a, b], false)
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
        self.adt(Op::Add, set, members, exist_ok)
    }

    /// `ipset del` of many members (`-exist` when `missing_ok`); same
    /// batching and caveat as [`IpsetClient::add`].
    pub fn del(
        &mut self,
        set: &SetName,
        members: &[Element],
        missing_ok: bool,
    ) -> Result<(), IpsetError> {
        self.adt(Op::Del, set, members, missing_ok)
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
            let detail = format!("{} set not readable: {}", u.type_name, u.reason);
            return Err(
                IpsetError::new(Op::List, u.name, IpsetErrorKind::WrongType, None).detail(detail),
            );
        }
        d.sets
            .pop()
            .ok_or_else(|| failed(t, Failure::Decode(DecodeError::Missing { what: "set" })))
    }

    /// `ipset save`: every set with its members.
    pub fn list_all(&mut self) -> Result<Listing, IpsetError> {
        self.listing(ListDepth::Members)
    }

    /// `ipset list -t`: every set's header and counts, no members.
    pub fn list_headers(&mut self) -> Result<Listing, IpsetError> {
        self.listing(ListDepth::Header)
    }

    fn listing(&mut self, depth: ListDepth) -> Result<Listing, IpsetError> {
        let d = self.dump(target(Op::List, ""), None, depth)?;
        let (sets, unsupported) = (d.sets, d.unsupported);
        Ok(Listing { sets, unsupported })
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
        let reply = self.query(t, |buf, seq| message::named(buf, seq, t.op, &[set], false))?;
        let (typename, fam, _) =
            message::decode_header_reply(&reply).map_err(|e| failed(t, Failure::Decode(e)))?;
        let unsupported = || {
            IpsetError::new(Op::Header, set.as_str(), IpsetErrorKind::WrongType, None).detail(
                format!("set type {typename} family {fam} is not one ipwarden writes"),
            )
        };
        let set_type = parse_set_type(&typename).map_err(|_| unsupported())?;
        let family = family_of(fam.into()).ok_or_else(unsupported)?;
        Ok((set_type, family))
    }

    fn next_seq(&mut self, n: usize) -> u32 {
        self.sock.next_seq(n)
    }

    /// A command on one set, or two (rename, swap).
    fn named(&mut self, op: Op, names: &[&SetName], exist_ok: bool) -> Result<(), IpsetError> {
        let t = Target {
            set2: names.get(1).map(|n| n.as_str()),
            ..target(op, names[0].as_str())
        };
        self.transact(t, |buf, seq| message::named(buf, seq, op, names, exist_ok))
            .map(drop)
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
        let t = Target { op: Op::Type, ..t };
        let reply = self.query(t, |buf, seq| {
            message::type_query(buf, seq, set_type, family)
        })?;
        let (max, _min) =
            message::decode_type_reply(&reply).map_err(|e| failed(t, Failure::Decode(e)))?;
        self.revisions.insert((set_type, family), max);
        Ok(max)
    }

    fn adt(
        &mut self,
        kind: Op,
        set: &SetName,
        members: &[Element],
        exist_ok: bool,
    ) -> Result<(), IpsetError> {
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
                return Err(
                    IpsetError::new(kind, set.as_str(), IpsetErrorKind::WrongType, None)
                        .detail(format!("{}: {detail}", m.entry)),
                );
            }
        }
        let t = Target {
            set_type: Some(set_type),
            ..target(kind, set.as_str())
        };
        let mut buf = std::mem::take(&mut self.send_buf);
        buf.clear();
        let first_seq = self.next_seq(0);
        let msgs = message::adt(
            &mut buf,
            kind,
            set,
            members,
            exist_ok,
            first_seq,
            message::MAX_ADT_NEST,
        );
        self.next_seq(msgs.len());
        let result = self.send_adt(t, &buf, &msgs, members);
        if buf.capacity() <= KEEP_SEND_BUF {
            self.send_buf = buf;
        }
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
            let bytes = &buf[start..msgs[j - 1].bytes.end];
            if let Some(e) = self.collect_acks(t, bytes, &msgs[i..j], members)? {
                return Err(e);
            }
            i = j;
        }
        Ok(())
    }

    /// Sends one batch and waits for one ACK or error per message; returns
    /// the first error in message order, naming the member the kernel's
    /// line number points at.
    fn collect_acks(
        &mut self,
        t: Target<'_>,
        bytes: &[u8],
        batch: &[AdtMessage],
        members: &[Element],
    ) -> Result<Option<IpsetError>, IpsetError> {
        let mut first: Option<(usize, IpsetError)> = None;
        let file = |k: usize, frame: &Frame<'_>, answer: Result<(), Refusal>| {
            let Err(refusal) = answer else { return true };
            // nfnetlink refuses a whole sendmsg without CAP_NET_ADMIN with
            // one EPERM: no other reply will come.
            let fatal = refusal.errno == libc::EPERM;
            if first.as_ref().is_none_or(|(p, _)| k < *p) {
                let member = message::lineno(frame.echoed()).and_then(|line| {
                    let idx = batch[k].members.start + (line as usize).checked_sub(1)?;
                    let ours = batch[k].members.contains(&idx);
                    ours.then(|| Box::new(members[idx].clone()))
                });
                first = Some((k, classify(t, refusal, member)));
            }
            !fatal
        };
        self.sock
            .batch(bytes, batch[0].seq, vec![true; batch.len()], file)
            .map_err(|f| failed(t, f))?;
        Ok(first.map(|(_, e)| e))
    }

    /// Encodes one request (`encode` gets the buffer and the sequence
    /// number), sends it, waits for its ACK; returns the attributes of the
    /// ipset messages that answered it first (header, type replies).
    fn transact(
        &mut self,
        t: Target<'_>,
        encode: impl FnOnce(&mut Vec<u8>, u32),
    ) -> Result<Vec<Vec<u8>>, IpsetError> {
        let seq = self.next_seq(1);
        let mut msg = Vec::new();
        encode(&mut msg, seq);
        let mut out = Vec::new();
        self.sock
            .transact(&msg, seq, false, |f, attrs| {
                if is_ipset(f) {
                    out.push(attrs.to_vec());
                }
                Ok(())
            })
            .map_err(|f| failed(t, f))?;
        Ok(out)
    }

    /// [`Self::transact`] for a request the kernel answers with one message.
    fn query(
        &mut self,
        t: Target<'_>,
        encode: impl FnOnce(&mut Vec<u8>, u32),
    ) -> Result<Vec<u8>, IpsetError> {
        let mut replies = self.transact(t, encode)?;
        let none = || failed(t, Failure::Decode(DecodeError::Missing { what: "reply" }));
        (!replies.is_empty())
            .then(|| replies.swap_remove(0))
            .ok_or_else(none)
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
        let mut d = ListDecoder::default();
        self.sock
            .transact(&buf, seq, false, |f, attrs| {
                if is_ipset(f) && f.ty as u8 == Op::List as u8 {
                    d.feed(attrs)?;
                }
                Ok(())
            })
            .map_err(|f| failed(t, f))?;
        Ok(d)
    }
}

fn is_ipset(f: &Frame<'_>) -> bool {
    f.ty >> 8 == u16::from(NFNL_SUBSYS_IPSET)
}

fn target(op: Op, set: &str) -> Target<'_> {
    Target {
        op,
        set,
        set2: None,
        set_type: None,
    }
}

/// An error of the header lookup an add/del starts with, named as the
/// add/del it belongs to.
fn retag(mut e: IpsetError, op: Op) -> IpsetError {
    if e.is(IpsetErrorKind::SetMissing) || e.is(IpsetErrorKind::WrongType) {
        e.op = op;
    }
    e
}

/// How many bytes of requests one sendmsg may carry: under the send buffer
/// (netlink_sendmsg refuses more than sk_sndbuf - 32) and under half the
/// receive buffer (every message may be answered by an error echoing it),
/// and never less than one full message.
fn batch_bytes(sndbuf: usize, rcvbuf: usize) -> usize {
    let snd = sndbuf.saturating_sub(1024);
    let rcv = rcvbuf / 2;
    snd.min(rcv).clamp(message::MAX_ADT_NEST + 1024, MAX_BATCH)
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
