#!/bin/bash
# Build the userspace RPMs of the pack (ebtables, arptables) for a 32-bit
# XenServer 5.x/6.x dom0 (CentOS 5: glibc 2.5, Linux 2.6.18-2.6.32).
#
#   rpm/build-userspace.sh OUTDIR
#
# - Source tarballs: $TOP/sources/<file> if present, else Debian's source archive
#   (a deb-src entry + apt-get source --download-only); sha256 must match
#   rpm/sources.sha256.
# - Binaries: STATIC 32-bit x86, linked against Debian's i386 musl
#   (i386-linux-musl-gcc), kernel headers from linux-libc-dev:i386.
# - rpmbuild --target i686 writes OUTDIR/<name>-<ver>-<rel>.i686.rpm and the
#   source RPMs into OUTDIR/SRPMS/.
# - A second run with unchanged inputs does nothing (stamp file in OUTDIR).
# - Network: apt only.
set -eu

RPMDIR=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$RPMDIR/.." && pwd)
SRCDIR=${VIF_RULES_SOURCES:-$TOP/sources}
PACKAGES="ebtables arptables"

die() { echo "build-userspace: $*" >&2; exit 1; }
log() { echo "build-userspace: $*" >&2; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
mkdir -p "$1"
OUTDIR=$(cd "$1" && pwd)

# ---------------------------------------------------------------- apt needs
APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" = 1 ] && return 0
    # One failing index (e.g. a mirror mid-sync) must not stop us: the install
    # or download that follows decides.
    apt-get update -qq || log "apt-get update reported errors; going on anyway"
    APT_UPDATED=1
}

need_root() {
    [ "$(id -u)" = 0 ] || die "$1 needs root (apt); install by hand or run as root"
}

ensure_packages() {
    local missing="" p
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    need_root "installing$missing"
    case " $missing " in
        *:i386*)
            if ! dpkg --print-foreign-architectures | grep -qx i386; then
                dpkg --add-architecture i386
                APT_UPDATED=0
            fi ;;
    esac
    apt_update
    log "installing$missing"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
}

# musl-dev:i386 brings i386-linux-musl-gcc (a wrapper around i686-linux-gnu-gcc).
ensure_packages musl-dev:i386 linux-libc-dev:i386 gcc-i686-linux-gnu binutils \
    make rpm perl

CC=${VR_CC:-i386-linux-musl-gcc}
command -v "$CC" >/dev/null || die "$CC not found after installing musl-dev:i386"
command -v rpmbuild >/dev/null || die "rpmbuild not found"

# ---------------------------------------------------------------- sources
WORK=$(mktemp -d /tmp/vif-rules-userspace.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

sha_ok() {  # sha_ok FILE -> 0 when FILE's sha256 matches the pinned one
    local f=$1 want got
    want=$(awk -v n="$(basename "$f")" '$2 == n { print $1 }' "$RPMDIR/sources.sha256")
    [ -n "$want" ] || die "no pinned sha256 for $(basename "$f") in rpm/sources.sha256"
    got=$(sha256sum "$f" | awk '{ print $1 }')
    [ "$got" = "$want" ]
}

ensure_deb_src() {
    # A deb-src entry for this release's main archive, unless one exists already.
    local codename list=/etc/apt/sources.list.d/vif-rules-deb-src.sources
    if grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return 0
    fi
    need_root "adding a deb-src entry"
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    cat >"$list" <<EOF
# Added by vif-rules rpm/build-userspace.sh (source tarballs of ebtables/arptables).
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    APT_UPDATED=0
}

fetch_sources() {
    local need="" f p
    mkdir -p "$SRCDIR"
    for f in $(awk '!/^#/ && NF == 2 { print $2 }' "$RPMDIR/sources.sha256"); do
        if [ -f "$SRCDIR/$f" ] && sha_ok "$SRCDIR/$f"; then
            continue
        fi
        [ -f "$SRCDIR/$f" ] && log "$SRCDIR/$f has the wrong sha256; fetching it again"
        need="$need $f"
    done
    [ -z "$need" ] && return 0
    ensure_deb_src
    apt_update
    mkdir -p "$WORK/apt-src"
    chmod 755 "$WORK" "$WORK/apt-src"   # lets apt's _apt sandbox user write there
    log "downloading sources:$need"
    (cd "$WORK/apt-src" && apt-get source -qq --download-only $PACKAGES >&2) \
        || die "apt-get source --download-only $PACKAGES failed"
    for f in $need; do
        [ -f "$WORK/apt-src/$f" ] || die "Debian's source archive did not provide $f"
        sha_ok "$WORK/apt-src/$f" || die "$f from Debian does not match rpm/sources.sha256"
        cp "$WORK/apt-src/$f" "$SRCDIR/$f.tmp" && mv "$SRCDIR/$f.tmp" "$SRCDIR/$f"
    done
}
fetch_sources
for f in $(awk '!/^#/ && NF == 2 { print $2 }' "$RPMDIR/sources.sha256"); do
    sha_ok "$SRCDIR/$f" || die "$SRCDIR/$f: sha256 mismatch"
done

# ---------------------------------------------------------------- up to date?
stamp_of() {
    {
        sha256sum "$RPMDIR/ebtables.spec" "$RPMDIR/arptables.spec" \
            "$RPMDIR/sources.sha256" "$RPMDIR/build-userspace.sh" | awk '{ print $1 }'
        "$CC" --version 2>/dev/null | head -1
        dpkg-query -W -f='${Version}\n' musl-dev:i386 linux-libc-dev:i386 2>/dev/null
        rpmbuild --version
    } | sha256sum | awk '{ print $1 }'
}
STAMP_FILE="$OUTDIR/.vif-rules-userspace.stamp"
STAMP=$(stamp_of)
rpm_names() {
    local p
    for p in $PACKAGES; do
        rpm -q --qf '%{NAME}-%{VERSION}-%{RELEASE}.i686.rpm\n' --specfile "$RPMDIR/$p.spec" \
            --define "_target_cpu i686" 2>/dev/null | head -1
    done
}
up_to_date() {
    local r
    [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$STAMP" ] || return 1
    for r in $(rpm_names); do
        [ -f "$OUTDIR/$r" ] || return 1
    done
    return 0
}
if up_to_date; then
    log "RPMs in $OUTDIR are up to date"
    exit 0
fi
rm -f "$STAMP_FILE"

# ---------------------------------------------------------------- kernel headers
# musl's gcc wrapper uses -nostdinc: give it the (i386) kernel headers only.
KH="$WORK/kheaders"
mkdir -p "$KH"
ASM=/usr/include/i386-linux-gnu/asm
[ -d "$ASM" ] || ASM=/usr/i686-linux-gnu/include/asm
[ -d "$ASM" ] || die "no i386 asm/ kernel headers (linux-libc-dev:i386)"
ln -s /usr/include/linux "$KH/linux"
ln -s /usr/include/asm-generic "$KH/asm-generic"
ln -s "$ASM" "$KH/asm"

# ---------------------------------------------------------------- rpmbuild
JOBS=$(nproc 2>/dev/null || echo 2)
[ "$JOBS" -gt 4 ] && JOBS=4
mkdir -p "$WORK/top" "$WORK/tmp" "$OUTDIR/SRPMS"
for p in $PACKAGES; do
    log "rpmbuild $p"
    rpmbuild -ba --target i686 --nodeps \
        --define "_topdir $WORK/top" \
        --define "_sourcedir $SRCDIR" \
        --define "_tmppath $WORK/tmp" \
        --define "_smp_mflags -j$JOBS" \
        --define "vr_cc $CC" \
        --define "vr_kheaders $KH" \
        "$RPMDIR/$p.spec" >"$WORK/$p.log" 2>&1 \
        || { tail -40 "$WORK/$p.log" >&2; die "rpmbuild of $p failed"; }
done
for r in "$WORK"/top/RPMS/*/*.rpm; do
    cp "$r" "$OUTDIR/"
    log "wrote $OUTDIR/$(basename "$r")"
done
cp "$WORK"/top/SRPMS/*.src.rpm "$OUTDIR/SRPMS/"
echo "$STAMP" >"$STAMP_FILE"
