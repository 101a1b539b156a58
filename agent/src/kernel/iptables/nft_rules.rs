//! The comments and packet counters of a table's rules under iptables-nft,
//! in one nf_tables netlink dump (NFT_MSG_GETRULE): what
//! `iptables-save -c` shows of them, without a process, without turning
//! every rule back into iptables syntax and without printing the table
//! (BENCHMARKS.md, "Reading the packet counters").
//!
//! iptables-nft keeps a rule's `-m comment` as an xtables `match`
//! expression named "comment" (or, in some versions, as the rule's user
//! data) and its counter as a `counter` expression.

use std::{io, os::fd::AsRawFd};

use neli::{
    consts::socket::{Msg, NlFamily},
    socket::NlSocket,
    utils::Groups,
};

use super::generation::set_recv_timeout;
use crate::desired::{Family, Table};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWRULE: u16 = 6;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// The dump met a ruleset change: what it read may be mixed.
const NLM_F_DUMP_INTR: u16 = 0x10;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_MATCH_NAME: u16 = 1;
const NFTA_MATCH_INFO: u16 = 3;
/// The comment's type in a rule's user data (libnftnl's udata TLVs).
const UDATA_RULE_COMMENT: u8 = 0;

/// nlmsghdr (16 bytes) + nfgenmsg (4 bytes).
const HEADER: usize = 20;
/// Dumps interrupted by a concurrent change are read again, this often.
const ATTEMPTS: usize = 3;

/// Calls `visit(comment, packets)` for every rule of `table` that has a
/// comment.
pub fn visit_comments(
    family: Family,
    table: Table,
    mut visit: impl FnMut(&str, u64),
) -> io::Result<()> {
    let mut rules = Vec::new();
    for _ in 0..ATTEMPTS {
        rules.clear();
        if dump(family, table, &mut rules)? {
            break;
        }
    }
    for (comment, packets) in &rules {
        visit(comment, *packets);
    }
    Ok(())
}

/// Reads every commented rule into `out`; false if the dump was
/// interrupted by a change.
fn dump(family: Family, table: Table, out: &mut Vec<(String, u64)>) -> io::Result<bool> {
    let sock = NlSocket::connect(NlFamily::Netfilter, None, Groups::empty())?;
    set_recv_timeout(sock.as_raw_fd())?;
    sock.send(request(family, table), Msg::empty())?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut whole = true;
    loop {
        let (n, _) = sock.recv(&mut buf[..], Msg::empty())?;
        if n == 0 {
            return Err(bad("the dump ended without NLMSG_DONE"));
        }
        let mut msgs = &buf[..n];
        while msgs.len() >= HEADER - 4 {
            let len = u32::from_ne_bytes(msgs[0..4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes([msgs[4], msgs[5]]);
            let flags = u16::from_ne_bytes([msgs[6], msgs[7]]);
            if len < 16 || len > msgs.len() {
                return Err(bad("truncated netlink message"));
            }
            let msg = &msgs[..len];
            whole &= flags & NLM_F_DUMP_INTR == 0;
            match kind {
                NLMSG_DONE => return Ok(whole),
                NLMSG_ERROR => return Err(error_of(msg)),
                k if k == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE => {
                    if let Some(rule) = msg.get(HEADER..).and_then(commented_rule) {
                        out.push(rule);
                    }
                }
                _ => {}
            }
            msgs = &msgs[align(len).min(msgs.len())..];
        }
    }
}

fn request(family: Family, table: Table) -> Vec<u8> {
    let mut msg = vec![0u8; HEADER];
    let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE;
    msg[4..6].copy_from_slice(&kind.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // nfgenmsg: the family, NFNETLINK_V0, resource id 0.
    msg[16] = match family {
        Family::V4 => NFPROTO_IPV4,
        Family::V6 => NFPROTO_IPV6,
    };
    let name = format!("{table}\0");
    let attr_len = 4 + name.len();
    msg.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    msg.extend_from_slice(&NFTA_RULE_TABLE.to_ne_bytes());
    msg.extend_from_slice(name.as_bytes());
    msg.resize(align(msg.len()), 0);
    let total = msg.len() as u32;
    msg[0..4].copy_from_slice(&total.to_ne_bytes());
    msg
}

/// (comment, packets) of a NFT_MSG_NEWRULE's attributes, if commented.
fn commented_rule(attrs: &[u8]) -> Option<(String, u64)> {
    let mut comment = None;
    let mut packets = 0;
    for (kind, value) in Attrs(attrs) {
        match kind {
            NFTA_RULE_EXPRESSIONS => {
                for (_, expr) in Attrs(value) {
                    match expression(expr) {
                        Some(Expr::Counter(p)) => packets = p,
                        Some(Expr::Comment(c)) => comment = comment.or(Some(c)),
                        None => {}
                    }
                }
            }
            NFTA_RULE_USERDATA if comment.is_none() => comment = udata_comment(value),
            _ => {}
        }
    }
    comment.map(|c| (c, packets))
}

enum Expr {
    Counter(u64),
    Comment(String),
}

/// A counter's packets or a comment match's text, from one expression.
fn expression(expr: &[u8]) -> Option<Expr> {
    let mut name: &[u8] = &[];
    let mut data: &[u8] = &[];
    for (kind, value) in Attrs(expr) {
        match kind {
            NFTA_EXPR_NAME => name = value,
            NFTA_EXPR_DATA => data = value,
            _ => {}
        }
    }
    match c_str(name) {
        "counter" => Attrs(data)
            .find(|(k, _)| *k == NFTA_COUNTER_PACKETS)
            .and_then(|(_, v)| Some(Expr::Counter(u64::from_be_bytes(v.try_into().ok()?)))),
        "match" => {
            let mut attrs = Attrs(data);
            let is_comment =
                Attrs(data).any(|(k, v)| k == NFTA_MATCH_NAME && c_str(v) == "comment");
            let info = attrs.find(|(k, _)| *k == NFTA_MATCH_INFO)?.1;
            is_comment.then(|| Expr::Comment(c_str(info).to_string()))
        }
        _ => None,
    }
}

/// The comment in a rule's user data (type, length, value TLVs).
fn udata_comment(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (kind, len) = (udata[0], usize::from(udata[1]));
        let value = udata.get(2..2 + len)?;
        if kind == UDATA_RULE_COMMENT {
            return Some(c_str(value).to_string());
        }
        udata = &udata[2 + len..];
    }
    None
}

/// A NUL-terminated (or NUL-padded) string; "" if not UTF-8.
fn c_str(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).unwrap_or_default()
}

/// Netlink attributes: (type without its flags, payload).
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            self.0 = &[];
            return None;
        }
        self.0 = &b[align(len).min(b.len())..];
        Some((kind, &b[4..len]))
    }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn error_of(msg: &[u8]) -> io::Error {
    match msg.get(16..20) {
        Some(e) => {
            io::Error::from_raw_os_error(-i32::from_ne_bytes(e.try_into().expect("4 bytes")))
        }
        None => bad("short netlink error"),
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align(a.len()), 0);
        a
    }

    fn expr(name: &str, data: &[u8]) -> Vec<u8> {
        let mut e = attr(NFTA_EXPR_NAME, format!("{name}\0").as_bytes());
        e.extend(attr(NFTA_EXPR_DATA | 0x8000, data));
        attr(1 | 0x8000, &e)
    }

    #[test]
    fn a_rule_gives_its_comment_and_packets() {
        let mut info = b"ipwarden:denied x/p ingress".to_vec();
        info.resize(256, 0);
        let mut comment = attr(NFTA_MATCH_NAME, b"comment\0");
        comment.extend(attr(2, &0u32.to_be_bytes()));
        comment.extend(attr(NFTA_MATCH_INFO, &info));
        let mut counter = attr(1, &60u64.to_be_bytes());
        counter.extend(attr(NFTA_COUNTER_PACKETS, &7u64.to_be_bytes()));
        let mut exprs = expr("match", &comment);
        exprs.extend(expr("counter", &counter));
        let mut rule = attr(NFTA_RULE_TABLE, b"filter\0");
        rule.extend(attr(NFTA_RULE_EXPRESSIONS | 0x8000, &exprs));
        assert_eq!(
            commented_rule(&rule),
            Some(("ipwarden:denied x/p ingress".to_string(), 7))
        );
    }

    #[test]
    fn a_comment_in_user_data_counts_too() {
        let mut udata = vec![UDATA_RULE_COMMENT, 5];
        udata.extend_from_slice(b"abcd\0");
        let rule = attr(NFTA_RULE_USERDATA, &udata);
        assert_eq!(commented_rule(&rule), Some(("abcd".to_string(), 0)));
    }
}
