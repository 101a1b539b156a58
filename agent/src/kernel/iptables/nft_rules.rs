//! The comments and packet counters of a table's rules under iptables-nft,
//! in one nf_tables netlink dump (NFT_MSG_GETRULE): what
//! `iptables-save -c` shows of them, without a process, without turning
//! every rule back into iptables syntax and without printing the table
//! (BENCHMARKS.md, "Reading the packet counters").
//!
//! iptables-nft keeps a rule's `-m comment` as an xtables `match`
//! expression named "comment" (or, in some versions, as the rule's user
//! data) and its counter as a `counter` expression.

use std::io;

use super::generation::{nfnetlink, NFNL_SUBSYS_NFTABLES};
use crate::desired::{Family, Table};
use crate::kernel::netlink::{
    af,
    frame::{NLM_F_DUMP, NLM_F_REQUEST},
    message, Attr, Attrs,
};

const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWRULE: u16 = 6;

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

/// Dumps interrupted by a concurrent change are read again, this often.
const ATTEMPTS: usize = 3;

/// Calls `visit(comment, packets)` for every rule of `table` that has a
/// comment.
pub(super) fn visit_comments(
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
    let mut sock = nfnetlink(256 * 1024)?;
    let seq = sock.next_seq(1);
    let newrule = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE;
    let interrupted = sock.transact(&request(family, table, seq), seq, false, |f, attrs| {
        if f.ty == newrule {
            out.extend(commented_rule(attrs));
        }
        Ok(())
    })?;
    Ok(!interrupted)
}

fn request(family: Family, table: Table, seq: u32) -> Vec<u8> {
    let mut msg = Vec::new();
    let ty = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE;
    // nfgenmsg: the family, NFNETLINK_V0, resource id 0.
    let header = [af(family), 0, 0, 0];
    message(
        &mut msg,
        (ty, NLM_F_REQUEST | NLM_F_DUMP, seq),
        &header,
        |w| w.put_str(NFTA_RULE_TABLE, &table.to_string()),
    );
    msg
}

/// (comment, packets) of a NFT_MSG_NEWRULE's attributes, if commented.
fn commented_rule(attrs: &[u8]) -> Option<(String, u64)> {
    let mut comment = None;
    let mut packets = 0;
    for a in attrs_of(attrs) {
        match a.ty {
            NFTA_RULE_EXPRESSIONS => {
                for expr in attrs_of(a.payload) {
                    match expression(expr.payload) {
                        Some(Expr::Counter(p)) => packets = p,
                        Some(Expr::Comment(c)) => comment = comment.or(Some(c)),
                        None => {}
                    }
                }
            }
            NFTA_RULE_USERDATA if comment.is_none() => comment = udata_comment(a.payload),
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
    for a in attrs_of(expr) {
        match a.ty {
            NFTA_EXPR_NAME => name = a.payload,
            NFTA_EXPR_DATA => data = a.payload,
            _ => {}
        }
    }
    let find = |ty| attrs_of(data).find(|a| a.ty == ty);
    match c_str(name) {
        "counter" => Some(Expr::Counter(find(NFTA_COUNTER_PACKETS)?.be64().ok()?)),
        "match" => {
            let is_comment = find(NFTA_MATCH_NAME).is_some_and(|a| c_str(a.payload) == "comment");
            let info = find(NFTA_MATCH_INFO)?;
            is_comment.then(|| Expr::Comment(c_str(info.payload).to_string()))
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

/// The well-formed attributes of `bytes`, up to a malformed one.
fn attrs_of(bytes: &[u8]) -> impl Iterator<Item = Attr<'_>> {
    Attrs::new(bytes).map_while(Result::ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(crate::kernel::netlink::align4(a.len()), 0);
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
