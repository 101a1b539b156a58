//! `IpvsClient`: the one owner of an IPVS netlink socket. Changes go out in
//! batches (many requests per `sendmsg`, one ack each, matched back by
//! sequence number); reads are dumps. IPVS state is per network namespace,
//! and so is the socket: open the client on a thread that is already in the
//! namespace you mean.

use std::{io, os::fd::AsRawFd, time::Duration};

use neli::{
    consts::socket::{Msg, NlFamily},
    socket::NlSocket,
    utils::Groups,
};

use super::{
    error::{DecodeError, IpvsError},
    message::{
        decode_destination, decode_family_id, decode_info, decode_service, decode_timeouts,
        encode_query, encode_request, encode_resolve, Query,
    },
    netlink::{frames, Frame, Reply},
    request::Request,
    types::{
        Destination, DestinationEntry, DestinationKey, Info, Service, ServiceEntry, ServiceKey,
        Timeouts, VirtualServer,
    },
};

/// Receive buffer: more than the 32 KiB the kernel puts in one dump datagram.
const RECV_BUF_LEN: usize = 64 * 1024;
/// Socket receive buffer we ask for, so a batch's acks fit before we read.
const WANT_RCVBUF: usize = 1 << 20;
/// Upper bound of the kernel memory one queued ack costs (skb truesize).
const ACK_TRUESIZE: usize = 1024;
/// Most requests in one `sendmsg`.
const MAX_BATCH: usize = 1024;
/// Most request bytes in one `sendmsg`: well under the default send buffer.
const MAX_BATCH_BYTES: usize = 96 * 1024;
/// A kernel that has not answered by then is not going to.
const RECV_TIMEOUT: Duration = Duration::from_secs(30);

const NETLINK_CAP_ACK: libc::c_int = 10;

/// The IPVS table of the current network namespace.
pub struct IpvsClient {
    sock: NlSocket,
    family: u16,
    seq: u32,
    batch: usize,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
}

impl IpvsClient {
    /// Opens a generic netlink socket and resolves the "IPVS" family.
    /// Fails with [`IpvsError::NoIpvs`] when the kernel has no IPVS.
    pub fn connect() -> Result<Self, IpvsError> {
        let sock = NlSocket::connect(NlFamily::Generic, None, Groups::empty())
            .map_err(|source| IpvsError::Socket { op: "open", source })?;
        // Best effort: errors then carry the kernel's text, and acks do not
        // echo whole requests. Old kernels lacking either still work.
        let _ = sock.enable_ext_ack(true);
        let _ = setsockopt_int(&sock, libc::SOL_NETLINK, NETLINK_CAP_ACK, 1);
        let rcvbuf = grow_rcvbuf(&sock);
        set_recv_timeout(&sock, RECV_TIMEOUT)
            .map_err(|source| IpvsError::Socket { op: "open", source })?;

        let mut client = IpvsClient {
            sock,
            family: 0,
            seq: 1,
            // Half the room the acks of a batch may take, for safety.
            batch: (rcvbuf / ACK_TRUESIZE / 2).clamp(16, MAX_BATCH),
            send_buf: Vec::with_capacity(MAX_BATCH_BYTES),
            recv_buf: vec![0; RECV_BUF_LEN],
        };
        client.family = client.resolve_family()?;
        Ok(client)
    }

    /// The generic netlink id the kernel gave the IPVS family.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// How many requests go into one `sendmsg`.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Caps the batch size (at least 1), e.g. to compare with one request
    /// per round trip.
    pub fn set_batch_size(&mut self, batch: usize) {
        self.batch = batch.clamp(1, MAX_BATCH);
    }

    /// Runs one change.
    pub fn execute(&mut self, req: &Request) -> Result<(), IpvsError> {
        self.execute_all(std::slice::from_ref(req))
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Runs changes in order, batched, and returns one result per request.
    /// A failed request does not stop the ones after it (the kernel carries
    /// on with the rest of a batch too).
    pub fn execute_all(&mut self, reqs: &[Request]) -> Vec<Result<(), IpvsError>> {
        let mut results: Vec<Option<Result<(), IpvsError>>> =
            std::iter::repeat_with(|| None).take(reqs.len()).collect();
        let mut start = 0;
        while start < reqs.len() {
            let first_seq = self.seq;
            self.send_buf.clear();
            let mut end = start;
            let mut pending = 0;
            while end < reqs.len()
                && end - start < self.batch
                && self.send_buf.len() < MAX_BATCH_BYTES
            {
                // One seq per request, sent or not, so seq - first_seq is
                // the index within the batch.
                let seq = self.next_seq();
                let req = &reqs[end];
                match encode_request(req, self.family, seq, &mut self.send_buf) {
                    Ok(()) => pending += 1,
                    Err(source) => {
                        results[end] = Some(Err(IpvsError::Invalid {
                            op: req.op(),
                            target: req.target(),
                            source,
                        }))
                    }
                }
                end += 1;
            }
            if pending > 0 {
                if let Err(e) = self.collect_acks(reqs, start, end, first_seq, &mut results) {
                    // The socket failed: whatever has no answer shares its fate.
                    for (i, slot) in results.iter_mut().enumerate().take(end).skip(start) {
                        if slot.is_none() {
                            *slot = Some(Err(IpvsError::Socket {
                                op: reqs[i].op(),
                                source: clone_io(&e),
                            }));
                        }
                    }
                }
            }
            start = end;
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
    }

    /// Sends the encoded batch `reqs[start..end]` and files each ack or
    /// error under its request.
    fn collect_acks(
        &mut self,
        reqs: &[Request],
        start: usize,
        end: usize,
        first_seq: u32,
        results: &mut [Option<Result<(), IpvsError>>],
    ) -> io::Result<()> {
        self.send()?;
        let mut pending = results[start..end].iter().filter(|r| r.is_none()).count();
        while pending > 0 {
            let n = self.recv()?;
            for frame in frames(&self.recv_buf[..n]) {
                let Ok(frame) = frame else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed netlink message",
                    ));
                };
                if file_reply(
                    &frame,
                    &reqs[start..end],
                    first_seq,
                    &mut results[start..end],
                ) {
                    pending -= 1;
                }
            }
        }
        Ok(())
    }

    /// Every service, with counters but without destinations.
    pub fn services(&mut self) -> Result<Vec<ServiceEntry>, IpvsError> {
        let mut out = Vec::new();
        self.query(&Query::Services, "", |attrs| {
            out.push(decode_service(attrs)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// One service; [`IpvsError::NotFound`] if there is none with that key.
    pub fn service(&mut self, key: &ServiceKey) -> Result<ServiceEntry, IpvsError> {
        let mut out = None;
        self.query(&Query::Service(key), &key.to_string(), |attrs| {
            out = Some(decode_service(attrs)?);
            Ok(())
        })?;
        out.ok_or(IpvsError::Decode {
            op: "get service",
            source: DecodeError::Missing { what: "reply" },
        })
    }

    /// The destinations of one service, sorted by address and port. The
    /// kernel answers a missing service with an empty list.
    pub fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationEntry>, IpvsError> {
        let family = key.family();
        let mut out = Vec::new();
        self.query(&Query::Destinations(key), &key.to_string(), |attrs| {
            out.push(decode_destination(attrs, family)?);
            Ok(())
        })?;
        out.sort_by_key(|d| d.destination.key());
        Ok(out)
    }

    /// Everything, as `ipvsadm -Ln` shows it: services sorted like ipvsadm
    /// sorts them (address keys before marks), each with its destinations.
    pub fn list(&mut self) -> Result<Vec<VirtualServer>, IpvsError> {
        let mut services = self.services()?;
        services.sort_by_key(|s| s.service.key);
        services
            .into_iter()
            .map(|entry| {
                let destinations = self.destinations(&entry.service.key)?;
                Ok(VirtualServer {
                    entry,
                    destinations,
                })
            })
            .collect()
    }

    /// Connection timeouts (`ipvsadm -L --timeout`).
    pub fn timeouts(&mut self) -> Result<Timeouts, IpvsError> {
        let mut out = None;
        self.query(&Query::Timeouts, "", |attrs| {
            out = Some(decode_timeouts(attrs)?);
            Ok(())
        })?;
        out.ok_or(IpvsError::Decode {
            op: "get timeouts",
            source: DecodeError::Missing { what: "reply" },
        })
    }

    /// Version and connection table size (ipvsadm's banner).
    pub fn info(&mut self) -> Result<Info, IpvsError> {
        let mut out = None;
        self.query(&Query::Info, "", |attrs| {
            out = Some(decode_info(attrs)?);
            Ok(())
        })?;
        out.ok_or(IpvsError::Decode {
            op: "get info",
            source: DecodeError::Missing { what: "reply" },
        })
    }

    /// `ipvsadm -A`.
    pub fn add_service(&mut self, service: &Service) -> Result<(), IpvsError> {
        self.execute(&Request::AddService(service.clone()))
    }

    /// `ipvsadm -E`.
    pub fn edit_service(&mut self, service: &Service) -> Result<(), IpvsError> {
        self.execute(&Request::EditService(service.clone()))
    }

    /// `ipvsadm -D`.
    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<(), IpvsError> {
        self.execute(&Request::DeleteService(*key))
    }

    /// `ipvsadm -a`.
    pub fn add_destination(
        &mut self,
        service: &ServiceKey,
        dest: &Destination,
    ) -> Result<(), IpvsError> {
        self.execute(&Request::AddDestination {
            service: *service,
            destination: *dest,
        })
    }

    /// `ipvsadm -e`.
    pub fn edit_destination(
        &mut self,
        service: &ServiceKey,
        dest: &Destination,
    ) -> Result<(), IpvsError> {
        self.execute(&Request::EditDestination {
            service: *service,
            destination: *dest,
        })
    }

    /// `ipvsadm -d`.
    pub fn delete_destination(
        &mut self,
        service: &ServiceKey,
        dest: &DestinationKey,
    ) -> Result<(), IpvsError> {
        self.execute(&Request::DeleteDestination {
            service: *service,
            destination: *dest,
        })
    }

    /// `ipvsadm --set tcp tcpfin udp`.
    pub fn set_timeouts(&mut self, timeouts: &Timeouts) -> Result<(), IpvsError> {
        self.execute(&Request::SetTimeouts(*timeouts))
    }

    /// `ipvsadm -C`.
    pub fn flush(&mut self) -> Result<(), IpvsError> {
        self.execute(&Request::Flush)
    }

    fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        const OP: &str = "resolve generic netlink family";
        let seq = self.next_seq();
        self.send_buf.clear();
        encode_resolve(seq, &mut self.send_buf);
        let mut id = None;
        self.transact(OP, seq, false, |attrs| {
            id = Some(decode_family_id(attrs)?);
            Ok(())
        })
        .map_err(|f| match f {
            // The controller answers ENOENT for a family nobody registered.
            Failure::Errno(libc::ENOENT, _) => IpvsError::NoIpvs,
            f => f.into_ipvs(OP, "IPVS".into(), None),
        })?;
        id.ok_or(IpvsError::Decode {
            op: OP,
            source: DecodeError::Missing { what: "family id" },
        })
    }

    fn query(
        &mut self,
        q: &Query<'_>,
        target: &str,
        on_data: impl FnMut(&[u8]) -> Result<(), DecodeError>,
    ) -> Result<(), IpvsError> {
        let op = q.op();
        let seq = self.next_seq();
        self.send_buf.clear();
        encode_query(q, self.family, seq, &mut self.send_buf);
        self.transact(op, seq, q.is_dump(), on_data)
            .map_err(|f| f.into_ipvs(op, target.into(), None))
    }

    /// Sends `send_buf` (one request, `seq`) and feeds each data message of
    /// the answer to `on_data`, until the one reply or, for a dump,
    /// NLMSG_DONE. A dump is always read to its end, even after a decode
    /// error, so the next dump on this socket is not refused as busy.
    fn transact(
        &mut self,
        op: &'static str,
        seq: u32,
        dump: bool,
        mut on_data: impl FnMut(&[u8]) -> Result<(), DecodeError>,
    ) -> Result<(), Failure> {
        self.send().map_err(Failure::Io)?;
        let mut first_err = None;
        loop {
            let n = self.recv().map_err(Failure::Io)?;
            for frame in frames(&self.recv_buf[..n]) {
                let frame = frame.map_err(|e| Failure::Decode(op, e))?;
                if frame.seq != seq {
                    tracing::debug!(seq = frame.seq, "ipvs: ignoring a message for no request");
                    continue;
                }
                match frame.reply().map_err(|e| Failure::Decode(op, e))? {
                    Reply::Data { attrs, .. } => {
                        if let Err(e) = on_data(attrs) {
                            first_err.get_or_insert(e);
                        }
                        if !dump {
                            return first_err.map_or(Ok(()), |e| Err(Failure::Decode(op, e)));
                        }
                    }
                    Reply::Error { errno, extack } => return Err(Failure::Errno(errno, extack)),
                    Reply::Done | Reply::Ack => {
                        return first_err.map_or(Ok(()), |e| Err(Failure::Decode(op, e)))
                    }
                    Reply::Ignore => {}
                }
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        let seq = self.seq;
        // Plain wrapping: `execute_all` relies on consecutive numbers.
        self.seq = self.seq.wrapping_add(1);
        seq
    }

    fn send(&mut self) -> io::Result<()> {
        loop {
            match self.sock.send(&self.send_buf, Msg::empty()) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// One datagram into `recv_buf`; returns its length.
    fn recv(&mut self) -> io::Result<usize> {
        loop {
            match self.sock.recv(&mut self.recv_buf[..], Msg::TRUNC) {
                Ok((n, _)) if n > self.recv_buf.len() => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("netlink datagram of {n} bytes exceeds the receive buffer"),
                    ))
                }
                Ok((n, _)) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer from the kernel",
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Files the answer in `frame` under its request: the batch `reqs` went
/// out with consecutive sequence numbers from `first_seq`. Returns whether
/// it answered a request still waiting; anything else (a stale answer of
/// an abandoned batch, a second answer) is ignored.
fn file_reply(
    frame: &Frame<'_>,
    reqs: &[Request],
    first_seq: u32,
    results: &mut [Option<Result<(), IpvsError>>],
) -> bool {
    let i = frame.seq.wrapping_sub(first_seq) as usize;
    let (Some(req), Some(slot @ None)) = (reqs.get(i), results.get_mut(i)) else {
        tracing::debug!(seq = frame.seq, "ipvs: ignoring a message for no request");
        return false;
    };
    *slot = Some(match frame.reply() {
        Ok(Reply::Ack) => Ok(()),
        Ok(Reply::Error { errno, extack }) => Err(IpvsError::from_errno(
            req.op(),
            req.target(),
            errno,
            extack,
            req.scheduler(),
        )),
        Ok(_) => return false,
        Err(source) => Err(IpvsError::Decode {
            op: req.op(),
            source,
        }),
    });
    true
}

/// How a single transaction failed, before it is named.
enum Failure {
    Errno(i32, Option<String>),
    Io(io::Error),
    Decode(&'static str, DecodeError),
}

impl Failure {
    fn into_ipvs(self, op: &'static str, target: String, scheduler: Option<&str>) -> IpvsError {
        match self {
            Failure::Errno(errno, extack) => {
                IpvsError::from_errno(op, target, errno, extack, scheduler)
            }
            Failure::Io(source) => IpvsError::Socket { op, source },
            Failure::Decode(op, source) => IpvsError::Decode { op, source },
        }
    }
}

fn clone_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

fn setsockopt_int(
    sock: &NlSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the fd is open for the life of `sock`; value and its length match.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks for a receive buffer big enough for large batches of acks:
/// SO_RCVBUFFORCE (we hold CAP_NET_ADMIN when IPVS works at all), else
/// SO_RCVBUF within `rmem_max`. Returns what the kernel granted.
fn grow_rcvbuf(sock: &NlSocket) -> usize {
    let want = WANT_RCVBUF as libc::c_int;
    if setsockopt_int(sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want).is_err() {
        let _ = setsockopt_int(sock, libc::SOL_SOCKET, libc::SO_RCVBUF, want);
    }
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes of a c_int.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        usize::try_from(value).unwrap_or(0)
    } else {
        0
    }
}

fn set_recv_timeout(sock: &NlSocket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: 0,
    };
    // SAFETY: the fd is open; tv and its length match.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::ipvs::{Scheduler, Service};

    fn ack(seq: u32, errno: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&36u32.to_ne_bytes());
        v.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&(-errno).to_ne_bytes());
        v.extend_from_slice(&[0; 16]);
        v
    }

    #[test]
    fn answers_are_filed_by_sequence_number_across_wraparound() {
        let reqs: Vec<Request> = (0..4u8)
            .map(|i| {
                let key = ServiceKey::tcp([10, 0, 0, i].into(), 80);
                Request::AddService(Service::new(key, Scheduler::round_robin()))
            })
            .collect();
        let first = u32::MAX - 1; // the batch is MAX-1, MAX, 0, 1
        let mut results: Vec<Option<Result<(), IpvsError>>> = (0..4).map(|_| None).collect();
        let mut buf = Vec::new();
        for (seq, errno) in [(1, 0), (first, libc::EEXIST), (7, 0), (0, 0), (1, 0)] {
            buf.extend(ack(seq, errno));
        }
        let filed: Vec<bool> = frames(&buf)
            .map(|f| file_reply(&f.unwrap(), &reqs, first, &mut results))
            .collect();
        // seq 7 belongs to no request; the second answer for seq 1 is stale.
        assert_eq!(filed, [true, true, false, true, false]);
        assert!(results[0]
            .as_ref()
            .unwrap()
            .as_ref()
            .unwrap_err()
            .is_exists());
        assert!(results[1].is_none(), "seq MAX was never answered");
        assert!(matches!(results[2], Some(Ok(()))));
        assert!(matches!(results[3], Some(Ok(()))));
        let e = results[0].take().unwrap().unwrap_err();
        assert_eq!(e.to_string(), "add service TCP 10.0.0.0:80: already exists");
    }
}
