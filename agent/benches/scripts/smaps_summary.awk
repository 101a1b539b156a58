# Sums a /proc/PID/smaps by what each mapping is (agent_memory_vm.sh):
#   awk -f smaps_summary.awk /proc/PID/smaps
# An anonymous mapping right above a one-page PROT_NONE guard is a
# thread's stack; one right below a PROT_NONE reserve is a glibc arena's
# heap; the agent's binary is any path ending in /ipwarden.
function flush() {
    if (start == "") return
    kind = classify()
    size[kind] += sz; rss[kind] += rs; anon[kind] += an; count[kind]++
    printf "%-12s %8d %8d %8d  %s %s\n", start, sz, rs, an, perms, (name == "" ? "[anon " kind "]" : name) > "/dev/stderr"
    prev_end = end_; prev_perms = perms; prev_sz = sz
}
function classify() {
    if (name ~ /\/ipwarden( \(deleted\))?$/) return "binary " (perms ~ /x/ ? "text" : perms ~ /w/ ? "data" : "rodata")
    if (name ~ /bpf-map/) return "BPF maps (mmapped)"
    if (name ~ /\.so/) return "shared libraries"
    if (name == "[heap]") return "malloc: main heap"
    if (name == "[stack]") return "main thread stack"
    if (name ~ /^\[v/) return "vdso/vvar"
    if (name != "") return "other files: " name
    if (perms ~ /^---/) return "reserved (PROT_NONE)"
    if (prev_perms ~ /^---/ && prev_end == start && prev_sz == 4) return "thread stacks"
    return "anonymous mmaps (arenas, large allocations)"
}
/^[0-9a-f]+-[0-9a-f]+ / {
    flush()
    split($1, r, "-"); start = r[1]; end_ = r[2]; perms = $2
    name = ""; for (i = 6; i <= NF; i++) name = name (i > 6 ? " " : "") $i
    sz = rs = an = 0
    next
}
/^Size:/ { sz = $2 }
/^Rss:/ { rs = $2 }
/^Anonymous:/ { an = $2 }
END {
    flush()
    # Arena heaps: an anonymous rw mapping followed by its PROT_NONE reserve
    # are reported together with the other anonymous mappings.
    printf "%-45s %5s %10s %10s %10s\n", "what", "maps", "size kB", "rss kB", "anon kB"
    for (k in rss) printf "%-45s %5d %10d %10d %10d\n", k, count[k], size[k], rss[k], anon[k] | "sort -t'|' -k1"
}
