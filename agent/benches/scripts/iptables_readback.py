#!/usr/bin/env python3
"""What reading one owner's iptables back costs, per way of reading it.

Fills a throw-away network namespace's filter table the way the policy
controller fills it at 5000 pods / 1000 NetworkPolicies (CHAINS pod firewall
chains of 10 rules with set matches and comments, their jumps, 50 foreign
rules), then times each way a full sync could read its rules back: the
whole-table save it used to run, per-chain listings, nft's own listings,
counting, and the nf_tables ruleset generation (NFT_MSG_GETGEN) that a no-op
apply now reads instead. Wall and CPU (this process and its children) per
read, medians of RUNS. Root only; the namespace is deleted at the end.

usage: python3 agent/benches/scripts/iptables_readback.py [RUNS] [CHAINS]
"""
import ctypes, os, resource, socket, statistics, struct, subprocess, sys, time

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 7
CHAINS = int(sys.argv[2]) if len(sys.argv) > 2 else 1268
NS = f"ipw-readback-{os.getpid()}"


def table():
    out = ["*filter"] + [f":IPWARDEN-{c} - [0:0]" for c in ("INPUT", "FORWARD", "OUTPUT")]
    chains = [f"IPW-POD-FW-{i:016X}" for i in range(CHAINS)]
    out += [f":{c} - [0:0]" for c in chains]
    for c in ("INPUT", "FORWARD", "OUTPUT"):
        out.append(f'-A {c} -m comment --comment "ipwarden:policies" -j IPWARDEN-{c}')
    out += [f"-A INPUT -s 10.99.{i}.0/24 -j ACCEPT" for i in range(50)]
    for i, c in enumerate(chains):
        ip = f"10.{i // 250}.{i % 250}.1"
        out.append(f'-A IPWARDEN-FORWARD -d {ip}/32 -m comment --comment "ipwarden:pod x/p{i}" -j {c}')
        for r in range(9):
            out.append(
                f"-A {c} -m set --match-set ipwarden-p{r} src -p tcp -m tcp --dport {8000 + r} "
                f'-m comment --comment "ipwarden:allow ns/pol{r}" -j MARK --set-xmark 0x10000/0x10000'
            )
        out.append(
            f'-A {c} -d {ip}/32 -m mark ! --mark 0x10000/0x10000 -m comment --comment "ipwarden:denied x/p ingress" '
            "-j REJECT --reject-with icmp-port-unreachable"
        )
    return "\n".join(out + ["COMMIT", ""]), chains


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def getgen():
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    s.bind((0, 0))
    # nlmsghdr: NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN, NLM_F_REQUEST; nfgenmsg
    s.send(struct.pack("=IHHII", 20, (10 << 8) | 16, 1, 1, 0) + struct.pack("=BBH", 0, 0, 0))
    s.recv(65536)
    s.close()


def measure(fn):
    walls, cpus = [], []
    for _ in range(RUNS):
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        fn()
        walls.append((time.perf_counter() - t0) * 1e3)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = lambda a, b: (b.ru_utime + b.ru_stime) - (a.ru_utime + a.ru_stime)
        cpus.append((cpu(c0, c1) + cpu(s0, s1)) * 1e3)
    return statistics.median(walls), statistics.median(cpus)


def main():
    text, chains = table()
    sh(f"ip netns add {NS}")
    try:
        fd = os.open(f"/run/netns/{NS}", os.O_RDONLY)
        if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "setns")
        for r in range(9):
            sh(f"ipset create ipwarden-p{r} hash:ip")
        subprocess.run(["iptables-restore", "--noflush"], input=text.encode(), check=True)
        rules = text.count("\n-A ")
        sample = chains[:100]
        options = [
            ("`iptables-save -t filter` (the whole table: the read-back before)", lambda: sh("iptables-save -t filter")),
            ("`iptables -S` (the whole table)", lambda: sh("iptables -S")),
            (f"`iptables -S CHAIN`, 100 of the {len(chains)} pod chains (x{len(chains) / 100:.1f} for all)",
             lambda: [sh(f"iptables -S {c}") for c in sample]),
            ("`iptables -S INPUT` (one built-in chain)", lambda: sh("iptables -S INPUT")),
            ("`nft -j list table ip filter`", lambda: sh("nft -j list table ip filter")),
            ("`nft list table ip filter`", lambda: sh("nft list table ip filter")),
            ("`nft list chain ip filter INPUT`", lambda: sh("nft list chain ip filter INPUT")),
            ("`nft list ruleset | wc -l` (counting)", lambda: sh("nft list ruleset | wc -l")),
            ("NFT_MSG_GETGEN (one netlink request: the read a no-op apply does now)", getgen),
        ]
        print(f"{len(chains)} pod chains, {rules} rules in the v4 filter table; medians of {RUNS} runs\n")
        print("| read | wall ms | CPU ms (process + children) |")
        print("|---|---:|---:|")
        for name, fn in options:
            w, c = measure(fn)
            print(f"| {name} | {w:.2f} | {c:.2f} |")
    finally:
        subprocess.run(["ip", "netns", "del", NS])


if __name__ == "__main__":
    main()
