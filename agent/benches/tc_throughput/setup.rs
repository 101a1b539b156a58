//! The receivers, each a node programmed for its configuration, and the
//! one loaded program attached where a configuration has it.

use super::*;

/// Everything the measurements run against. Fields drop in this order,
/// as main's locals did before this was split out.
pub(super) struct Bench {
    pub(super) _empty_link: std::os::fd::OwnedFd,
    pub(super) empty: std::os::fd::OwnedFd,
    pub(super) _sources: bpf::EgressSources,
    pub(super) mirror: BpfMirror,
    pub(super) dp: TcProgram,
    pub(super) receivers: Vec<Receiver>,
    pub(super) sender: NetNs,
}

impl Bench {
    pub(super) fn new() -> Bench {
        let object = bpf::object_path_from_env();
        let sender = NetNs::new("ipw-bench-tx").expect("netns");
        let (receivers, state) = receivers(&sender);
        let members = svip_prt_members(&state);
        assert_eq!(members, MEMBERS, "the generated cluster's service ports");

        // One loaded object serves every receiver with the program: the same
        // maps, the program attached to each one's veth0 from inside its
        // namespace. The mirror is written by the daemon's own hook.
        let mut dp = receivers[0]
            .ns
            .run(|| {
                TcProgram::load(&object, ProgramLogLevel::Info).unwrap_or_else(|e| {
                    panic!(
                        "loading {}: {e} (set IPWARDEN_BPF_OBJECT or run `cargo xtask build-ebpf`)",
                        object.display()
                    )
                })
            })
            .expect("netns");
        dp.configure(Mode::Allow, DEFAULT_MARK).expect("configure");
        let mut mirror: BpfMirror = dp.take_mirror().expect("mirror");
        let mirrored: Vec<&ipwarden::desired::SetSpec> = state
            .sets
            .iter()
            .filter(|s| s.name.contains("ipwarden-svip"))
            .collect();
        mirror.mirror(&mirrored, &state.member_services);
        eprintln!("tc bench: mirror holds {members} service ports");
        let restricted = restricted_sources(at(Config::IpwardenNode), receivers.len());
        let mut sources = dp.take_sources().expect("sources");
        sources.add(&restricted);
        eprintln!(
            "tc bench: {} egress-restricted sources ({LOCAL_PODS} local pods' addresses among them)",
            restricted.len()
        );
        for rx in receivers.iter().filter(|r| r.config.has_program()) {
            let how = rx
                .ns
                .run(|| dp.attach_ingress("veth0"))
                .expect("netns")
                .expect("attach");
            eprintln!("tc bench: attached to {} veth0 ({how:?})", rx.ns.name());
        }
        // The empty program: what any attached program costs, and what the
        // statistics report for a program that does nothing.
        let empty = test_run::empty_program().expect("load an empty program");
        let empty_rx = receivers
            .iter()
            .find(|r| r.config == Config::TcEmpty)
            .expect("tc-empty");
        let empty_link = empty_rx
            .ns
            .run(|| attach_tcx(empty.as_fd(), "veth0"))
            .expect("netns")
            .expect("attach the empty program (TCX)");
        Bench {
            _empty_link: empty_link,
            empty,
            _sources: sources,
            mirror,
            dp,
            receivers,
            sender,
        }
    }

    /// Stops the iperf3 servers (our own children, by handle).
    pub(super) fn stop_iperf(&mut self) {
        for rx in &mut self.receivers {
            let _ = rx.iperf.kill();
            let _ = rx.iperf.wait();
        }
    }
}

/// One receiver per configuration, joined to `sender` by a veth pair, its
/// node programmed and an iperf3 server started; and the service state of
/// the first (its sets feed the mirror).
fn receivers(sender: &NetNs) -> (Vec<Receiver>, ipwarden::desired::ServiceState) {
    let receivers_n = Config::ALL.len();
    let mut receivers = Vec::new();
    let mut service_state = None;
    for (i, config) in Config::ALL.into_iter().enumerate() {
        let ns = NetNs::new(&format!("ipw-bench-rx{i}")).expect("netns");
        let (v4, v6) = (v4_of(i), v6_of(i));
        let peer4 = format!("10.201.{}.2/24", i + 1);
        let peer6 = format!("fd00:201:{:x}::2/64", i + 1);
        sender
            .veth_to(
                &ns,
                (&format!("vb{i}"), &[peer4.as_str(), peer6.as_str()]),
                ("veth0", &[&format!("{v4}/24"), &format!("{v6}/64")]),
            )
            .expect("veth pair");
        let t = Instant::now();
        let state = program_node(&ns, config, &snapshot(i, receivers_n));
        eprintln!(
            "tc bench: {} ready in {:.1} s ({} members in svip-prt)",
            config.short(),
            t.elapsed().as_secs_f64(),
            svip_prt_members(&state)
        );
        service_state.get_or_insert(state);
        let iperf = ns
            .run(|| {
                let mut cmd = Command::new("iperf3");
                cmd.args(["-s", "-B", &v4.to_string(), "-p", &TCP_PORT.to_string()]);
                if cpus() >= 2 {
                    cmd.args(["-A", "1"]);
                }
                cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()
            })
            .expect("netns")
            .expect("start iperf3 -s (apt-get install iperf3)");
        receivers.push(Receiver {
            config,
            ns,
            v4,
            v6,
            iperf,
        });
    }
    let state = service_state.expect("at least one receiver");
    (receivers, state)
}
