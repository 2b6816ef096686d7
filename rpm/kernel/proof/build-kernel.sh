#!/bin/bash
# Build the proof kernel: Debian's linux-source-6.1 for i386, tinyconfig plus
# base.config plus the pack's fragment merged the way the pack merges it
# (rebuild-kernel-srpm.py, raise-only).  Cached by content:
#   build-kernel.sh [CACHE_ROOT]   prints the cache directory on stdout
# The directory holds bzImage, config, kconfig-symbols (every symbol this
# Kconfig defines, for the fragment check) and lib/modules/<release>/.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
KERNEL_DIR=$(dirname "$HERE")
FRAGMENT=$KERNEL_DIR/physdev-ebtables.config
BASE=$HERE/base.config
TARBALL=/usr/src/linux-source-6.1.tar.xz
CACHE_ROOT=${1:-${KPROOF_CACHE:-/var/cache/vif-rules/kernel-proof}}
JOBS=${KPROOF_JOBS:-2}

[ -r "$TARBALL" ] || { echo "build-kernel.sh: $TARBALL missing (apt-get install linux-source-6.1)" >&2; exit 1; }
srcver=$(dpkg-query -W -f '${Version}' linux-source-6.1)
# the key: everything that decides the kernel (the merge is merge_config.py with
# the pack's own merge in rebuild-kernel-srpm.py) and the source's version
key=$( { cat "$FRAGMENT" "$BASE" "$0" "$HERE/merge_config.py" "$HERE/rebuild_tool.py" "$KERNEL_DIR/rebuild-kernel-srpm.py"
         echo "linux-source-6.1 $srcver"; } | sha256sum | cut -d' ' -f1)
dest=$CACHE_ROOT/$key
if [ -f "$dest/bzImage" ]; then
    echo "build-kernel.sh: cached $dest" >&2
    echo "$dest"; exit 0
fi

mkdir -p "$CACHE_ROOT"
work=$(mktemp -d /var/tmp/vif-rules-kernel.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "build-kernel.sh: building linux-source-6.1 $srcver for i386 in $work (log: $work/build.log)" >&2
tar -C "$work" -xJf "$TARBALL"
src=$work/linux-source-6.1
mk() { make -C "$src" ARCH=i386 -j"$JOBS" "$@"; }
{
    mk tinyconfig
    python3 "$HERE/merge_config.py" --base "$BASE" --fragment "$FRAGMENT" "$src/.config"
    mk olddefconfig
    mk bzImage modules
    mk modules_install INSTALL_MOD_PATH="$work/out" INSTALL_MOD_STRIP=1
} >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; cp "$work/build.log" "$CACHE_ROOT/failed-build.log"; exit 1; }

out=$work/out
cp "$src/arch/x86/boot/bzImage" "$out/bzImage"
cp "$src/.config" "$out/config"
make -s -C "$src" ARCH=i386 kernelrelease >"$out/release"
# every symbol this Kconfig tree defines: a fragment option absent from the
# config is then either hidden by a dependency or unknown (renamed/dropped)
find "$src" -name 'Kconfig*' -print0 | xargs -0 sed -n 's/^[[:space:]]*\(menu\)\{0,1\}config[[:space:]]\{1,\}\([A-Za-z0-9_]\{1,\}\).*/\2/p' \
    | sort -u >"$out/kconfig-symbols"
cp "$work/build.log" "$out/build.log"
rm -rf "$dest.tmp"; mv "$out" "$dest.tmp"; mv "$dest.tmp" "$dest"
echo "$dest"
