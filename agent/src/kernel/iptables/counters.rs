//! Packet counters of commented rules: how the policy controller's
//! counting rules (and the service proxy's) become metrics. Under
//! iptables-nft they come from one netlink dump of the table's rules
//! (nft_rules.rs); under the legacy backend, or if that dump fails, from
//! `iptables-save -c`.

use std::collections::BTreeMap;

use super::{apply::save_text, nft_backend, nft_rules, IptablesError};
use crate::desired::{Family, Table};

/// Packets counted by every rule of `table` whose comment starts with
/// `prefix`, summed per comment (the text after the prefix).
pub fn comment_counters(
    family: Family,
    table: Table,
    prefix: &str,
) -> Result<BTreeMap<String, u64>, IptablesError> {
    if nft_backend() {
        let mut out = BTreeMap::new();
        let read = nft_rules::visit_comments(family, table, |comment, packets| {
            if let Some(text) = comment.strip_prefix(prefix) {
                *out.entry(text.to_string()).or_default() += packets;
            }
        });
        match read {
            Ok(()) => return Ok(out),
            Err(e) => {
                tracing::debug!(error = %e, "no nf_tables rule dump; reading counters with iptables-save -c")
            }
        }
    }
    comment_counters_from_save(family, table, prefix)
}

/// [`comment_counters`] read from `iptables-save -c`, whatever the
/// backend.
pub fn comment_counters_from_save(
    family: Family,
    table: Table,
    prefix: &str,
) -> Result<BTreeMap<String, u64>, IptablesError> {
    Ok(parse(&save_text(family, table, &["-c"])?, prefix))
}

/// `[12:720] -A CHAIN ... --comment "PREFIXtext" ...` -> {"text": 12}.
fn parse(save: &str, prefix: &str) -> BTreeMap<String, u64> {
    let needle = format!("--comment \"{prefix}");
    let mut out = BTreeMap::new();
    for line in save.lines() {
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some(at) = line.find(&needle) else {
            continue;
        };
        let Some(text) = line[at + needle.len()..].split('"').next() else {
            continue;
        };
        let packets: u64 = rest
            .split(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        *out.entry(text.to_string()).or_default() += packets;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_summed_per_comment() {
        let save = "*filter\n:INPUT ACCEPT [5:300]\n\
            [3:180] -A IPW-POD-FW-A -d 10.0.0.1/32 -m mark ! --mark 0x10000/0x10000 -m comment --comment \"ipwarden:denied x/p ingress\"\n\
            [4:240] -A IPW-POD-FW-B -d 10.0.0.2/32 -m mark ! --mark 0x10000/0x10000 -m comment --comment \"ipwarden:denied x/p ingress\"\n\
            [1:60] -A IPW-POD-FW-B -s 10.0.0.2/32 -m mark ! --mark 0x10000/0x10000 -m comment --comment \"ipwarden:denied x/q egress\"\n\
            [9:9] -A INPUT -m comment --comment \"other\" -j ACCEPT\nCOMMIT\n";
        let c = super::parse(save, "ipwarden:denied ");
        assert_eq!(c.len(), 2);
        assert_eq!(c["x/p ingress"], 7);
        assert_eq!(c["x/q egress"], 1);
    }
}
