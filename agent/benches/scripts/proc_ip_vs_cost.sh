#!/bin/bash
# The kernel's cost of one read of /proc/net/ip_vs at N services of three
# destinations: sys time of `cat` minus that of `true`, both in the netns.
# In the IPVS VM: cargo xtask vm-test -- agent/benches/scripts/proc_ip_vs_cost.sh
set -e
TIMEFORMAT='%3S'
for n in 2500 5000 10000; do
  python3 - "$n" > /tmp/ipvs.rules <<'PY'
import sys
for i in range(int(sys.argv[1])):
    a = "10.96.%d.%d" % (i // 250, i % 250 + 1)
    print("-A -t %s:80 -s rr" % a)
    for j in range(3):
        print("-a -t %s:80 -r 10.244.%d.%d:8080 -m -w 1" % (a, i % 200, (i + j) % 250 + 1))
PY
  ns=t$n
  ip netns add $ns
  ip -n $ns link set lo up; ip -n $ns link add d0 type dummy; ip -n $ns link set d0 up; ip -n $ns addr add 10.244.255.254/16 dev d0
  ip netns exec $ns ipvsadm -R < /tmp/ipvs.rules
  cat_sys=(); true_sys=()
  for k in 1 2 3 4 5; do
    true_sys+=( $( { time ip netns exec $ns true; } 2>&1 ) )
    cat_sys+=( $( { time ip netns exec $ns cat /proc/net/ip_vs > /dev/null; } 2>&1 ) )
  done
  echo "$n services, $(ip netns exec $ns cat /proc/net/ip_vs | wc -c) bytes: sys s of cat: ${cat_sys[*]}; of true: ${true_sys[*]}"
  ip netns exec $ns ipvsadm -C; ip netns del $ns
done
