//! Flags read the way kube-router and client-go read them, and the
//! combinations that cannot work refused at startup: a bad flag is a
//! [`UsageError`] (exit status 2, as clap's own), never a silent default.

use std::net::{SocketAddr, ToSocketAddrs};

use ipnet::IpNet;

/// A flag or combination of flags that cannot work: `main` exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `FIRST-LAST` or `FIRST:LAST` (kube-router's form).
pub fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| format!("{s}: expected FIRST-LAST or FIRST:LAST"))?;
    let a: u16 = a.trim().parse().map_err(|e| format!("{a}: {e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("{b}: {e}"))?;
    if a > b {
        return Err(format!("{a} is above {b}"));
    }
    Ok((a, b))
}

/// A CIDR without host bits: `10.96.0.1/12` is refused, naming
/// `10.96.0.0/12` (else the rules written from it never read back equal).
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let net: IpNet = s
        .trim()
        .parse()
        .map_err(|e| format!("{s}: {e} (expected a CIDR such as 10.96.0.0/12)"))?;
    if net.trunc() != net {
        return Err(format!(
            "{s} has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// `HOST:PORT` to listen on, the host an address or a name (`localhost`)
/// resolved now; `:PORT` is every address, as Go's `net.Listen` reads it.
pub fn resolve_addr(s: &str) -> Result<SocketAddr, String> {
    resolve_with(s, "0.0.0.0")
}

/// `HOST:PORT` to connect to; `:PORT` is this host (127.0.0.1).
pub fn connect_addr(s: &str) -> Result<SocketAddr, String> {
    resolve_with(s, "127.0.0.1")
}

fn resolve_with(s: &str, empty_host: &str) -> Result<SocketAddr, String> {
    let full;
    let s = match s.strip_prefix(':') {
        Some(port) => {
            full = format!("{empty_host}:{port}");
            full.as_str()
        }
        None => s,
    };
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: {e} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| format!("{s}: the name resolves to no address"))
}

/// The API server's URL from `--master`: without a scheme, `https://` is
/// put in front, as client-go does (`127.0.0.1:6443`).
pub fn master_url(s: &str) -> Result<http::Uri, String> {
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("https://{s}")
    };
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|e| format!("--master {s} is not a URL: {e}"))?;
    if uri.host().is_none() {
        return Err(format!("--master {s} names no host"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_both_forms() {
        assert_eq!(parse_range("30000-32767"), Ok((30000, 32767)));
        assert_eq!(parse_range("30000:32767"), Ok((30000, 32767)));
        assert!(parse_range("32767-30000").unwrap_err().contains("above"));
        assert!(parse_range("30000").is_err());
    }

    #[test]
    fn a_cidr_with_host_bits_is_refused_with_the_masked_form() {
        assert_eq!(
            parse_cidr("10.96.0.1/12").unwrap_err(),
            "10.96.0.1/12 has host bits set; did you mean 10.96.0.0/12?"
        );
        assert_eq!(
            parse_cidr("10.96.0.0/12").unwrap().to_string(),
            "10.96.0.0/12"
        );
        assert!(parse_cidr("fd00::1/64").unwrap_err().contains("fd00::/64"));
    }

    #[test]
    fn localhost_resolves() {
        assert!(resolve_addr("localhost:20244").unwrap().ip().is_loopback());
        assert_eq!(
            resolve_addr("0.0.0.0:1").unwrap(),
            "0.0.0.0:1".parse().unwrap()
        );
        assert!(resolve_addr("nohost").is_err());
        assert_eq!(resolve_addr(":9").unwrap(), "0.0.0.0:9".parse().unwrap());
        assert_eq!(connect_addr(":9").unwrap(), "127.0.0.1:9".parse().unwrap());
        assert!(connect_addr("localhost:9").unwrap().ip().is_loopback());
    }

    #[test]
    fn master_without_a_scheme_gets_https() {
        assert_eq!(
            master_url("127.0.0.1:6443").unwrap().to_string(),
            "https://127.0.0.1:6443/"
        );
        assert_eq!(
            master_url("http://127.0.0.1:8080").unwrap().scheme_str(),
            Some("http")
        );
    }
}
