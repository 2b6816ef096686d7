#!/bin/bash
# Build the kernel of tests/test_ovs_kernel_datapath.py: Debian's
# linux-source-6.1 for x86_64, tinyconfig plus kernel.config. Cached by content:
#   build-kernel.sh [CACHE_ROOT]   prints the directory holding bzImage and config
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
TARBALL=/usr/src/linux-source-6.1.tar.xz
CACHE_ROOT=${1:-${KDP_CACHE:-/var/cache/vif-rules/kdp-kernel}}
JOBS=${KDP_JOBS:-$(nproc)}

[ -r "$TARBALL" ] || { echo "build-kernel.sh: $TARBALL missing (apt-get install linux-source-6.1)" >&2; exit 1; }
srcver=$(dpkg-query -W -f '${Version}' linux-source-6.1)
key=$( { cat "$HERE/kernel.config" "$0"; echo "linux-source-6.1 $srcver"; } | sha256sum | cut -d' ' -f1)
dest=$CACHE_ROOT/$key
if [ -f "$dest/bzImage" ]; then
    echo "$dest"; exit 0
fi
mkdir -p "$CACHE_ROOT"
work=$(mktemp -d /var/tmp/vif-rules-kdp.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "build-kernel.sh: building linux-source-6.1 $srcver for x86_64 in $work" >&2
tar -C "$work" -xJf "$TARBALL"
src=$work/linux-source-6.1
mk() { make -C "$src" ARCH=x86_64 -j"$JOBS" "$@"; }
(
    set -e
    mk tinyconfig
    "$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$HERE/kernel.config"
    mk olddefconfig
    # every option asked for must be in the result (a dependency missing
    # would drop it without a word)
    missing=""
    while read -r line; do
        case "$line" in CONFIG_*=y) grep -qx "$line" "$src/.config" || missing="$missing $line" ;; esac
    done <"$HERE/kernel.config"
    [ -z "$missing" ] || { echo "options dropped by olddefconfig:$missing"; exit 1; }
    mk bzImage
) >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; cp "$work/build.log" "$CACHE_ROOT/failed-build.log"; exit 1; }
mkdir -p "$work/out"
cp "$src/arch/x86/boot/bzImage" "$src/.config" "$work/out/"
rm -rf "$dest.tmp"; mv "$work/out" "$dest.tmp"; mv "$dest.tmp" "$dest"
echo "$dest"
