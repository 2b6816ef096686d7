#!/bin/bash
# The 32-bit dom0 parts on a real 32-bit kernel (see README "32-bit dom0"):
#   run-proof.sh [--break] [--rpms DIR] [--log FILE]
# 1. build-kernel.sh: linux-source-6.1 for i386 with the pack's fragment (cached);
# 2. check_config.py: every fragment option in the built .config, or documented;
# 3. an initramfs of Debian's i386 busybox-static, the kernel's modules, the
#    payloads of the pack's i686 ebtables/arptables RPMs (DIR, default: built
#    by rpm/build-userspace.sh into the cache) and the product's rules for one
#    VIF rendered by render_rules.py (--break: with one rule removed);
# 4. qemu-system-i386 (TCG, no network device) boots it with a timeout; /init
#    runs the frames.  Ends with "kernel-proof: PASS" or "kernel-proof: FAIL ...";
#    the kernel's and the VM's output are in the log (default in the cache).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../../.." && pwd)
CACHE_ROOT=${KPROOF_CACHE:-/var/cache/vif-rules/kernel-proof}
BOOT_TIMEOUT=${KPROOF_BOOT_TIMEOUT:-600}
broken="" rpms="" log=""
while [ $# -gt 0 ]; do
    case "$1" in
        --break) broken=--break; shift ;;
        --rpms) rpms=${2:?--rpms needs a directory}; shift 2 ;;
        --log) log=${2:?--log needs a file}; shift 2 ;;
        *) echo "run-proof.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$CACHE_ROOT"
log=${log:-$CACHE_ROOT/kernel-proof.log}
: >"$log"
verdict() {
    echo "kernel-proof: $*" | tee -a "$log"
    case "$*" in PASS*) ;; *) echo "kernel-proof: log kept in $log" >&2 ;; esac
}
work=$(mktemp -d /var/tmp/vif-rules-proof.XXXXXX)
trap 'rm -rf "$work"' EXIT

if ! kdir=$("$HERE/build-kernel.sh" "$CACHE_ROOT" 2>>"$log"); then
    verdict "FAIL (kernel build; see $CACHE_ROOT/failed-build.log)"; exit 1
fi
release=$(cat "$kdir/release")
echo "== kernel $release from $kdir" >>"$log"
kconfig_ok=1
python3 "$HERE/check_config.py" --fragment "$HERE/../physdev-ebtables.config" \
    --config "$kdir/config" --symbols "$kdir/kconfig-symbols" >>"$log" || kconfig_ok=0

# ---- the pack's RPMs (not rebuilt here: unpacked as the pack ships them)
if [ -z "$rpms" ]; then
    rpms=$CACHE_ROOT/userspace
    "$TOP/rpm/build-userspace.sh" "$rpms" >>"$log" 2>&1 || { verdict "FAIL (userspace RPMs)"; exit 1; }
fi
# ---- Debian's i386 busybox-static, downloaded (the host's busybox stays as it is)
busybox_candidate() { apt-cache policy busybox-static:i386 2>/dev/null | awk '/Candidate:/ { print $2 }'; }
bbver=$(busybox_candidate)
if [ -z "$bbver" ] || [ "$bbver" = "(none)" ]; then
    dpkg --print-foreign-architectures | grep -qx i386 || dpkg --add-architecture i386
    apt-get update -qq >>"$log" 2>&1 || echo "apt-get update reported errors; going on" >>"$log"
    bbver=$(busybox_candidate)
fi
bbdir=$CACHE_ROOT/busybox-i386-${bbver//[:~]/_}
if [ ! -x "$bbdir/bin/busybox" ]; then
    (cd "$work" && apt-get download -q busybox-static:i386) >>"$log" 2>&1 || { verdict "FAIL (busybox-static:i386 download)"; exit 1; }
    dpkg-deb -x "$work"/busybox-static_*_i386.deb "$bbdir.tmp" && mv "$bbdir.tmp" "$bbdir"
fi

# ---- the initramfs
root=$work/root
mkdir -p "$root/bin" "$root/proof" "$root/lib"
cp "$bbdir/bin/busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp -a "$kdir/lib/modules" "$root/lib/"
for rpm in "$rpms"/ebtables-*.i686.rpm "$rpms"/arptables-*.i686.rpm; do
    [ -f "$rpm" ] || { verdict "FAIL (no RPM $rpm)"; exit 1; }
    (cd "$root" && rpm2cpio "$rpm" | cpio -idm --quiet)
done
python3 "$HERE/render_rules.py" "$root/proof" $broken
cp "$HERE/init" "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

# ---- boot
echo "== booting qemu-system-i386 (timeout ${BOOT_TIMEOUT}s)${broken:+ with the rule set broken on purpose}" >>"$log"
start=$(date +%s)
timeout "$BOOT_TIMEOUT" qemu-system-i386 -M pc -m 256 -accel tcg -nic none \
    -display none -monitor none -serial stdio -no-reboot \
    -kernel "$kdir/bzImage" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 rdinit=/init" </dev/null >>"$log" 2>&1 || true
echo "== the VM ran $(( $(date +%s) - start ))s" >>"$log"
vm=$(tr -d '\r' <"$log" | grep -E '^VM-PROOF: (PASS|FAIL)' | tail -1 || true)
if [ "$kconfig_ok" = 1 ] && [ "$vm" = "VM-PROOF: PASS" ]; then
    verdict "PASS"; exit 0
fi
vm=${vm:-the VM gave no verdict (timeout or crash)}
[ "$kconfig_ok" = 1 ] || vm="kconfig check failed; $vm"
verdict "FAIL ($vm)"; exit 1
