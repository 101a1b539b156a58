//! The kernel modules the tests need: which, in what order (resolved on the
//! host with `modprobe --show-depends`), and their bytes as the initramfs
//! carries them.
//!
//! Loading them from the initramfs with one static busybox modprobe is much
//! faster than the host's modprobe in the guest, which would read the full
//! modules.dep and start a dynamic binary over 9p for every module.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::process;

/// Needed to boot at all: the 9p root, the overlay and the output port.
pub const BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_console",
    "9pnet_virtio",
    "9p",
    "overlay",
];

/// What the agent and its tests touch. A kernel without one of these still
/// boots (with a warning); anything else the guest asks for is loaded on
/// demand by the host's modprobe, visible through the 9p root.
pub const TEST_MODULES: &[&str] = &[
    // iptables, both back ends (Debian's iptables is the nf_tables one).
    "nf_conntrack",
    "nf_nat",
    "ip_tables",
    "iptable_filter",
    "iptable_nat",
    "iptable_mangle",
    "iptable_raw",
    "ip6_tables",
    "ip6table_filter",
    "ip6table_nat",
    "ip6table_mangle",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "xt_set",
    "xt_mark",
    "xt_comment",
    "xt_conntrack",
    "xt_MASQUERADE",
    "ipt_REJECT",
    "ip6t_REJECT",
    "xt_nat",
    "xt_addrtype",
    "xt_multiport",
    "xt_tcpudp",
    "xt_statistic",
    "xt_ipvs",
    "xt_sctp",
    // IPVS and the schedulers the agent offers.
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_lc",
    "ip_vs_sh",
    "ip_vs_dh",
    "ip_vs_mh",
    // SCTP sockets (the policy cases on SCTP traffic; this host has none).
    "sctp",
    // ipset types kube-proxy style rules use.
    "ip_set",
    "ip_set_hash_ip",
    "ip_set_hash_ipport",
    "ip_set_hash_ipportip",
    "ip_set_hash_ipportnet",
    "ip_set_hash_net",
    "ip_set_hash_netport",
    "ip_set_bitmap_port",
    // Links and tc.
    "veth",
    "dummy",
    "sch_ingress",
    "cls_bpf",
    "act_bpf",
    "bridge",
    "br_netfilter",
];

/// One `insmod` line of `modprobe --show-depends`.
#[derive(Debug, PartialEq)]
pub struct Insmod {
    pub path: String,
    pub options: String,
}

/// Parses `modprobe --show-depends` output (`insmod PATH [OPTIONS]` or
/// `builtin NAME` per line), dependencies first, adding paths not yet in `into`.
pub fn parse_show_depends(output: &str, into: &mut Vec<Insmod>) {
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("insmod ") else {
            continue; // "builtin NAME": nothing to load
        };
        let (path, options) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
        if !into.iter().any(|m| m.path == path) {
            into.push(Insmod {
                path: path.to_owned(),
                options: options.trim().to_owned(),
            });
        }
    }
}

fn modprobe() -> PathBuf {
    process::which("modprobe")
        .or_else(|| {
            ["/usr/sbin/modprobe", "/sbin/modprobe"]
                .map(PathBuf::from)
                .into_iter()
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("modprobe"))
}

/// The boot modules and then the test ones, each list in load order.
pub fn resolve(release: &str) -> Result<(Vec<Insmod>, Vec<Insmod>)> {
    let modprobe = modprobe();
    let mut modules = Vec::new();
    let mut boot_count = 0;
    for (i, name) in BOOT_MODULES.iter().chain(TEST_MODULES).enumerate() {
        let required = i < BOOT_MODULES.len();
        if i == BOOT_MODULES.len() {
            boot_count = modules.len();
        }
        let out = Command::new(&modprobe)
            .args(["-S", release, "--show-depends", name])
            .output()
            .with_context(|| format!("could not start {} (package kmod)", modprobe.display()))?;
        if !out.status.success() {
            if required {
                bail!(
                    "kernel {release} has no module {name}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            eprintln!("xtask: vm-test: kernel {release} has no module {name}, going without it");
            continue;
        }
        parse_show_depends(&String::from_utf8_lossy(&out.stdout), &mut modules);
    }
    let test = modules.split_off(boot_count);
    Ok((modules, test))
}

/// The module's path once decompressed, and its name.
pub fn uncompressed_name(relative: &str) -> (String, String) {
    let plain = [".xz", ".zst", ".gz"]
        .iter()
        .find_map(|ext| relative.strip_suffix(ext))
        .unwrap_or(relative);
    let file = plain.rsplit('/').next().unwrap_or(plain);
    (plain.to_owned(), file.trim_end_matches(".ko").to_owned())
}

/// A module file's bytes; newer Debian kernels compress them, and busybox's
/// insmod hands the kernel what it reads.
pub fn bytes(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => return fs::read(path).with_context(|| format!("could not read {}", path.display())),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("could not start `{tool}` to unpack {}", path.display()))?;
    if !out.status.success() {
        bail!("`{tool} -dc {}` failed with {}", path.display(), out.status);
    }
    Ok(out.stdout)
}

const SIGNATURE_MAGIC: &[u8] = b"~Module signature appended~\n";

/// The module without its appended signature: checking one costs an RSA
/// verification in an emulated CPU (~10 ms a module), and the kernel does
/// not insist (it only marks itself tainted).
pub fn strip_signature(module: &[u8]) -> &[u8] {
    // Layout: module, signature, struct module_signature (12 bytes, ending
    // in the signature's big-endian length), magic.
    let Some(rest) = module.strip_suffix(SIGNATURE_MAGIC) else {
        return module;
    };
    let Some(info_at) = rest.len().checked_sub(12) else {
        return module;
    };
    let sig_len = u32::from_be_bytes(rest[info_at + 8..].try_into().unwrap_or_default()) as usize;
    match info_at.checked_sub(sig_len) {
        Some(end) => &module[..end],
        None => module,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_depends_keeps_order_options_and_drops_builtins() {
        let mut modules = Vec::new();
        parse_show_depends(
            "insmod /lib/modules/6.1/kernel/lib/libcrc32c.ko \n\
             insmod /lib/modules/6.1/kernel/net/netfilter/nf_conntrack.ko hashsize=4096 \n\
             builtin unix\n\
             insmod /lib/modules/6.1/kernel/net/netfilter/ipvs/ip_vs.ko \n",
            &mut modules,
        );
        parse_show_depends(
            "insmod /lib/modules/6.1/kernel/lib/libcrc32c.ko \n\
             insmod /lib/modules/6.1/kernel/net/netfilter/ipvs/ip_vs_rr.ko\n",
            &mut modules,
        );
        let got: Vec<(&str, &str)> = modules
            .iter()
            .map(|m| (m.path.as_str(), m.options.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("/lib/modules/6.1/kernel/lib/libcrc32c.ko", ""),
                (
                    "/lib/modules/6.1/kernel/net/netfilter/nf_conntrack.ko",
                    "hashsize=4096"
                ),
                ("/lib/modules/6.1/kernel/net/netfilter/ipvs/ip_vs.ko", ""),
                ("/lib/modules/6.1/kernel/net/netfilter/ipvs/ip_vs_rr.ko", ""),
            ]
        );
    }

    #[test]
    fn strips_an_appended_signature() {
        let mut module = b"\x7fELF...module body".to_vec();
        let body_len = module.len();
        module.extend_from_slice(b"PKCS7-SIGNATURE!"); // 16 bytes
        module.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0]);
        module.extend_from_slice(&16u32.to_be_bytes());
        module.extend_from_slice(SIGNATURE_MAGIC);
        assert_eq!(strip_signature(&module), &module[..body_len]);
        // Unsigned, or a length that does not fit: left alone.
        assert_eq!(strip_signature(b"\x7fELF plain"), b"\x7fELF plain");
        let mut bogus = vec![0u8; 12];
        bogus[8..12].copy_from_slice(&999u32.to_be_bytes());
        bogus.extend_from_slice(SIGNATURE_MAGIC);
        assert_eq!(strip_signature(&bogus), bogus.as_slice());
    }

    #[test]
    fn compressed_modules_are_named_without_suffixes() {
        let plain = uncompressed_name("kernel/net/netfilter/ipvs/ip_vs.ko");
        assert_eq!(
            plain,
            ("kernel/net/netfilter/ipvs/ip_vs.ko".into(), "ip_vs".into())
        );
        let xz = uncompressed_name("kernel/arch/x86/crypto/crc32c-intel.ko.xz");
        assert_eq!(
            xz,
            (
                "kernel/arch/x86/crypto/crc32c-intel.ko".into(),
                "crc32c-intel".into()
            )
        );
    }

    #[test]
    fn show_depends_of_a_builtin_adds_nothing() {
        let mut modules = Vec::new();
        parse_show_depends("builtin sch_ingress\n", &mut modules);
        parse_show_depends("", &mut modules);
        assert!(modules.is_empty());
    }
}
