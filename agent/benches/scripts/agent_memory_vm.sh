#!/bin/sh
# The agent bench's agent's memory in the VM, with any ipwarden binary.
# Run inside `cargo xtask vm-test` (BENCHMARKS.md, "Stop 15"):
#   agent_memory_vm.sh BIN BENCH [BENCH ARGS...]
# BIN is copied over the ipwarden the bench binary was built with (its
# CARGO_BIN_EXE_ipwarden, on the guest's overlay only: the host's file is
# untouched); the agent's /proc status is sampled every second and
# printed after the bench. IPWARDEN_PROF_ENV="A=1 B=2" is exported for
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
( while true; do
    P=$(pgrep -n -x ipwarden)
    [ -n "$P" ] && echo "$(cut -d' ' -f1 /proc/uptime) $(grep -E 'VmHWM|VmRSS|RssAnon|RssFile|RssShmem|Threads' /proc/$P/status | tr -s ' \t\n' ' ')"
    sleep 1
  done ) > $LOG 2>&1 &
"$@"; rc=$?
echo "== samples"
cat $LOG
exit $rc
