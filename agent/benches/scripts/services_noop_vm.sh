#!/bin/bash
# The service proxy alone on 10k Services from a manifests folder, in a
# fresh netns: CPU of its first full sync against its periodic no-op full
# syncs (its own ipwarden_sync_cpu_seconds_total), per binary. In the IPVS VM:
#   cargo xtask vm-test -- env MANIFESTS=DIR agent/benches/scripts/services_noop_vm.sh BIN...
M=${MANIFESTS:?a folder of services_manifests.py output}
# metric NAME LABEL...: the value of the series of NAME with every LABEL.
metric() { local name=$1; shift; ip netns exec $ns curl -s 127.0.0.1:20250/metrics | grep "^$name{" | grep 'controller="services"' | grep 'kind="full"' | { v=$(cat); for l in "$@"; do v=$(echo "$v" | grep "$l"); done; echo "$v"; } | awk '{print $2}' | head -1; }
cpu() { metric ipwarden_sync_cpu_seconds_total; }
count() { metric ipwarden_syncs_total 'result="ok"'; }
dur() { metric ipwarden_sync_duration_seconds_sum; }
wait_count() { local t=0; while [ "$(count)" -lt "$1" ] 2>/dev/null || [ -z "$(count)" ]; do sleep 1; t=$((t+1)); [ $t -gt 900 ] && { echo timeout; return 1; }; done; }
for BIN in "$@"; do
  ns=noop$RANDOM; ip netns add $ns; ip -n $ns link set lo up
  ready=/run/noop.ready.$ns; log=/run/noop.$ns.log
  ip netns exec $ns $BIN run --manifests $M --node-name node-a --run-firewall=false --bpf-mode off \
    --ready-file $ready --ipvs-sync-period 20s --audit-interval 1h --api-addr 127.0.0.1:20250 >$log 2>&1 &
  pid=$!
  t=0; while [ ! -e $ready ]; do sleep 1; t=$((t+1)); [ $t -gt 900 ] && break; done
  echo "== $BIN: ready after ${t} s; first full sync: CPU $(cpu) s, wall $(dur) s, count $(count)"
  n=$(count); wait_count $((n + 1)); prev=$(cpu); each=()
  for k in $(seq $((n + 2)) $((n + ${SYNCS:-8} + 1))); do
    wait_count $k; now=$(cpu); each+=( $(echo "$now - $prev" | bc -l) ); prev=$now
  done
  echo "   CPU of each no-op full sync (the cheap read's second on): ${each[*]}"
  echo "   median: $(printf '%s\n' "${each[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
  grep -o 'steps: .*kind=Full' $log | tail -$((${SYNCS:-8} + 2))
  grep -c . $log >/dev/null
  grep -m3 -i "warn\|error" $log
  kill -TERM $pid; wait $pid; ip netns del $ns
done
