#!/bin/sh
# ipwarden vm-test, stage 1: /init in the initramfs, run by busybox sh.
# Loads the modules, builds the root (host / over 9p, read-only, under a tmpfs
# overlay), mounts what stage 2 needs, then hands PID 1 to the per-run script
# on the results share. Everything here is static busybox: a dynamic binary
# over 9p costs far more to start under TCG.
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
# Timestamps for the console log, which is printed when a run fails.
stamp() { read -r up _ </proc/uptime; echo "vm-init: $up s: $*"; }
stamp start

# One modprobe per list: a process start costs ~40x native under TCG. The
# lists are in dependency order, resolved on the host (modules.dep here has
# no dependencies of its own).
read -r boot_modules </modules.boot
read -r test_modules </modules.test
modprobe -a $boot_modules || echo "vm-init: some boot modules failed to load"
# The rest load on the other vCPU while the root is mounted.
modprobe -a $test_modules &
loading=$!

msize=msize=512000
mount -t tmpfs -o mode=0755 tmpfs /overlay
mkdir /overlay/upper /overlay/work
mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,$msize hostroot /lower
mount -t overlay -o lowerdir=/lower,upperdir=/overlay/upper,workdir=/overlay/work overlay /root
mount -t proc proc /root/proc
mount -t sysfs sysfs /root/sys
mount -t bpf bpf /root/sys/fs/bpf
mount --move /dev /root/dev
# A fresh /run: `ip netns add` keeps its state under /run/netns.
mount -t tmpfs -o mode=0755 tmpfs /root/run
mkdir /root/run/ipwarden-vm /root/dev/pts /root/dev/shm
# Not cached: the status must be on the host the moment it is written.
mount -t 9p -o trans=virtio,version=9p2000.L,$msize results /root/run/ipwarden-vm
# An empty /tmp, unless the caller's cwd is in the host's.
[ -e /root/run/ipwarden-vm/host-tmp ] || mount -t tmpfs -o mode=1777 tmpfs /root/tmp
mount -t devpts -o newinstance,ptmxmode=0666 devpts /root/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /root/dev/shm
ip link set lo up
wait $loading || echo "vm-init: some test modules failed to load"

# The output port appears once qemu has acknowledged it, usually long ago.
tries=0
until set -- /root/dev/vport*p*; [ -c "$1" ] || [ $tries -ge 200 ]; do
	usleep 10000
	tries=$((tries + 1))
done
stamp starting the command
if [ -f /root/run/ipwarden-vm/run.sh ]; then
	exec switch_root /root /bin/sh /run/ipwarden-vm/run.sh
fi
echo "vm-init: the results share or its run.sh is missing"
poweroff -f
