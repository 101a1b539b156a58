#!/bin/sh
# heaptrack of the agent under the agent bench, in the VM (BENCHMARKS.md,
# "Stop 18: the sets handed to the store"). Given as the bench's agent:
#   IPWARDEN_BENCH_AGENT_BIN=$PWD/agent/benches/scripts/agent_heaptrack.sh \
#   IPWARDEN_HT_BIN=/path/to/ipwarden IPWARDEN_HT_OUT=/run/ipwarden-vm/ht \
#   ./target/debug/xtask vm-test --keep -- target/release/deps/agent-HASH
# (then wait for heaptrack_interpret to finish before the command ends).
# The preload library goes into the agent itself, which is exec'd so it
# keeps the pid the bench signals (heaptrack's own script would take the
# SIGTERM and leave the file unfinished); the interpreter runs beside it,
# writing IPWARDEN_HT_OUT.PID.zst on the results share.
PIPE=/tmp/heaptrack-pipe.$$
mkfifo "$PIPE" || exit 1
/usr/lib/heaptrack/libexec/heaptrack_interpret < "$PIPE" | zstd -q -1 -c > "$IPWARDEN_HT_OUT.$$.zst" &
LD_PRELOAD=/usr/lib/heaptrack/libheaptrack_preload.so DUMP_HEAPTRACK_OUTPUT="$PIPE" exec "$IPWARDEN_HT_BIN" "$@"
