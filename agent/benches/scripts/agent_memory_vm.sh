#!/bin/sh
# The agent bench's agent's memory in the VM, with any ipwarden binary.
# Run inside `cargo xtask vm-test` (BENCHMARKS.md, "Stop 15"):
#   agent_memory_vm.sh BIN BENCH [BENCH ARGS...]
# BIN is copied over the ipwarden the bench binary was built with (its
# CARGO_BIN_EXE_ipwarden, on the guest's overlay only: the host's file is
# untouched); the agent's /proc status is sampled every second and
# printed after the bench, with its smaps at the highest VmRSS sampled,
# summed by what each mapping is (smaps_summary.awk beside this script). IPWARDEN_PROF_ENV="A=1 B=2" is exported for
# the agent (the guest forwards only IPWARDEN_* variables).
# The bench's path to ipwarden: `strings BENCH | grep release/ipwarden`.
BIN=$1; shift
# IPWARDEN_PROF_TARGET: that path, if the bench was built in another tree.
TARGET=${IPWARDEN_PROF_TARGET:-$PWD/target/release/ipwarden}
if [ -n "$IPWARDEN_PROF_ENV" ]; then
    export $IPWARDEN_PROF_ENV
    echo "agent env: $IPWARDEN_PROF_ENV"
fi
cp "$BIN" "$TARGET" || exit 1
LOG=/tmp/agent-memory-samples.log
PEAK=/tmp/agent-memory-peak
( MAX=0; while true; do
    P=$(pgrep -n -x ipwarden)
    if [ -n "$P" ]; then
        echo "$(cut -d' ' -f1 /proc/uptime) $(grep -E 'VmHWM|VmRSS|RssAnon|RssFile|RssShmem|Threads' /proc/$P/status | tr -s ' \t\n' ' ')"
        RSS=$(awk '/^VmRSS/ { print $2 }' /proc/$P/status)
        if [ "${RSS:-0}" -gt "$MAX" ] && cp /proc/$P/smaps $PEAK.smaps 2>/dev/null; then
            MAX=$RSS
            cp /proc/$P/smaps_rollup $PEAK.rollup 2>/dev/null
            cat /proc/$P/task/*/comm 2>/dev/null | sort | uniq -c > $PEAK.threads
        fi
    fi
    sleep 1
  done ) > $LOG 2>&1 &
"$@"; rc=$?
echo "== samples"
cat $LOG
if [ -f $PEAK.smaps ]; then
    echo "== smaps at the highest VmRSS sampled"
    cat $PEAK.rollup
    echo "== threads then"
    cat $PEAK.threads
    echo "== by kind of mapping (kB)"
    awk -f "$(dirname "$0")/smaps_summary.awk" $PEAK.smaps 2> $PEAK.maps
    echo "== the largest mappings: start, size kB, rss kB, anon kB, perms, name"
    sort -k3 -n -r $PEAK.maps | head -25
fi
exit $rc
