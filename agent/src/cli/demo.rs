//! `ipwarden demo`: the tc classifier at work between two throw-away
//! network namespaces, printed step by step. Touches nothing on the host.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use ipwarden_common::{maps::PROTO_UDP, names::DEFAULT_MARK, Mode, ServiceKey, ServiceValue};

use crate::{
    bpf::{self, ProgramLogLevel, TcProgram},
    netns::NetNs,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The eBPF object; default: the image's, else where `cargo xtask
    /// build-ebpf` puts it in this checkout.
    #[arg(long, env = "IPWARDEN_BPF_OBJECT")]
    pub bpf_object: Option<PathBuf>,
}

const NODE: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const MEMBER_PORT: u16 = 8080;
const OTHER_PORT: u16 = 9090;

/// The tc classifier, then the rescue when the kernel has IPVS.
pub fn run(args: &Args) -> Result<()> {
    let object = bpf::find_object(args.bpf_object.as_deref())?;
    println!("== The tc classifier between two namespaces\n");
    classifier(&object)?;
    println!();
    if !Path::new("/proc/net/ip_vs").exists() {
        println!("== The rescue needs IPVS, which this kernel lacks: `cargo xtask demo` runs it in the VM");
        return Ok(());
    }
    println!("== The rescue of an ExternalIP missing from ipwarden-svip-prt\n");
    // The agent runs as a child process, in the lab's node namespace.
    std::env::set_var("IPWARDEN_BPF_OBJECT", &object);
    super::demo_rescue::run(&std::env::current_exe()?)
}

fn classifier(object: &Path) -> Result<()> {
    let node = NetNs::new("ipw-demo-node").context("creating a network namespace")?;
    let peer = NetNs::new("ipw-demo-peer")?;
    node.veth_to(
        &peer,
        ("veth0", &["10.201.0.1/24"]),
        ("veth1", &["10.201.0.2/24"]),
    )?;
    println!(
        "namespaces {} and {} joined by veth0/veth1",
        node.name(),
        peer.name()
    );

    let member = ServiceKey::v4(NODE.octets(), PROTO_UDP, MEMBER_PORT);
    let other = ServiceKey::v4(NODE.octets(), PROTO_UDP, OTHER_PORT);
    let mut dp = node.run(|| -> Result<_> {
        let mut dp = TcProgram::load(object, ProgramLogLevel::Info)?;
        dp.configure(Mode::Log, DEFAULT_MARK)?;
        dp.services()?.insert(
            member,
            ServiceValue {
                flags: 0,
                service_id: 1,
            },
        )?;
        let how = dp.attach_ingress("veth0")?;
        println!(
            "classifier loaded from {} and attached to veth0 ingress ({how:?})",
            object.display()
        );
        Ok(dp)
    })??;
    println!("mirror holds {NODE} udp:{MEMBER_PORT}; mode log, mark {DEFAULT_MARK:#x}");

    let mark = format!("{DEFAULT_MARK:#x}/{DEFAULT_MARK:#x}");
    for port in [MEMBER_PORT, OTHER_PORT] {
        let port = port.to_string();
        node.output(
            "iptables",
            &[
                "-A", "INPUT", "-p", "udp", "--dport", &port, "-m", "mark", "--mark", &mark,
            ],
        )?;
    }

    for port in [MEMBER_PORT, OTHER_PORT] {
        let rx = node.run(|| UdpSocket::bind((NODE, port)))??;
        rx.set_read_timeout(Some(Duration::from_secs(5)))?;
        let tx = peer.run(|| UdpSocket::bind(SocketAddr::from(([10, 201, 0, 2], 0))))??;
        let mut buf = [0u8; 16];
        for _ in 0..5 {
            tx.send_to(b"hello", (NODE, port))?;
            rx.recv(&mut buf)
                .with_context(|| format!("datagram to port {port} lost"))?;
        }
        println!("sent and received 5 UDP datagrams 10.201.0.2 -> {NODE}:{port}");
    }

    let mirror = dp.services()?;
    for (key, label) in [(member, "member"), (other, "not a member")] {
        let h = mirror.hits(&key)?;
        println!(
            "hits {NODE} udp:{} ({label}): {} packets, {} bytes",
            key.port, h.packets, h.bytes
        );
    }
    println!("iptables mark-match counters in the node namespace (iptables-save -c):");
    for line in node
        .output("iptables-save", &["-c", "-t", "filter"])?
        .lines()
    {
        if line.contains("-A INPUT") {
            println!("  {line}");
        }
    }
    let id = mirror.map_id()?.to_string();
    println!(
        "bpftool map dump id {id} ({}):",
        ipwarden_common::names::MAP_SERVICES
    );
    print!("{}", node.output("bpftool", &["map", "dump", "id", &id])?);
    Ok(())
}
