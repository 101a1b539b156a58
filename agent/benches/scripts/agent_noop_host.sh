#!/bin/bash
# The agent (policy controller only: the host has no IPVS) on the memory
# bench's manifests (IPWARDEN_BENCH_MANIFESTS=/tmp/lean/m10k cargo bench -p
# ipwarden --bench memory), in a fresh netns: its first full sync against its
# periodic no-op full syncs (its own metrics), and its CPU ticks (self,
# children) over 35 s of them. Root only.
BIN=${BIN:-target/release/ipwarden}
ns=leannoop$$; ip netns add $ns; ip -n $ns link set lo up
rm -f /tmp/lean/ready.$$
ip netns exec $ns $BIN run --manifests /tmp/lean/m10k --node-name node-a --run-service-proxy=false \
  --ready-file /tmp/lean/ready.$$ --iptables-sync-period 10s --api-addr 127.0.0.1:20250 >/tmp/lean/noop.$$.log 2>&1 &
pid=$!
while [ ! -e /tmp/lean/ready.$$ ]; do sleep 0.2; done
m() { ip netns exec $ns curl -s 127.0.0.1:20250/metrics | grep -E '^ipwarden_sync_duration_seconds_(sum|count)\{controller="policies",kind="full"' | awk '{print $2}' | tr '\n' ' '; }
cpu() { awk "{print \$14+\$15, \$16+\$17}" /proc/$pid/stat; }
echo "after the first full sync: sum count = $(m)"
c0=$(cpu); sleep 35; c1=$(cpu)
echo "after 35 s of periodic no-op full syncs: sum count = $(m); CPU ticks (self, children) before: $c0 after: $c1"
kill -TERM $pid; wait $pid; ip netns del $ns
