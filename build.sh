#!/bin/bash
# vif-rules build driver.
#   ./build.sh            build both packs into out/: the legacy ISO (5.x-7.0) and the update ISO (7.1+, XCP-ng)
#   ./build.sh --sign-key KEYID     the same, the update ISO signed with that gpg key
#   ./build.sh --kernel-srpm FILE   the same, with the vendor dom0 kernel rebuilt
#   ./build.sh test       install test dependencies (apt + venv) and run the whole suite
#   ./build.sh demo       one-minute demo on a throwaway namespace bridge
#   ./build.sh bench      benchmark against the 2010 per-rule approach
#   ./build.sh mutants    drop each rule of a guest's policy in turn; the attacks must notice
set -eu
TOP=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$TOP/out}
VENV=${VENV:-$TOP/.venv}

APT_TEST_PACKAGES="iptables ebtables arptables iproute2 iputils-ping iperf3 tcpdump rpm genisoimage
  cpio file binutils kmod procps python3 python3-venv gcc make curl ca-certificates
  rpm2cpio perl strace createrepo-c rpmlint gnupg dnf xorriso busybox-static
  openvswitch-switch ethtool patch"
# the 32-bit kernel proof (rpm/kernel/proof/run-proof.sh): kernel build and qemu
KERNEL_PROOF_PACKAGES="linux-source-6.1 qemu-system-x86 gcc make bc flex bison libelf-dev libssl-dev libc6-dev kmod cpio rpm2cpio xz-utils python3"
APT_TEST_PACKAGES="$APT_TEST_PACKAGES $KERNEL_PROOF_PACKAGES"

need_root() {
    if [ "$(id -u)" != 0 ]; then echo "build.sh $1: run as root" >&2; exit 1; fi
}

apt_install() {
    # One failing index (a mirror mid-sync) must not stop the build: install decides.
    local missing="" p
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    need_root apt
    apt-get update -qq || echo "apt-get update reported errors; trying the install anyway" >&2
    # No service may start from an install (openvswitch-switch would run the
    # machine's own switch): the tests start their own daemons.
    local no_start=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        no_start=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing \
        || { [ -z "$no_start" ] || rm -f /usr/sbin/policy-rc.d; return 1; }
    [ -z "$no_start" ] || rm -f /usr/sbin/policy-rc.d
}

make_venv() {
    local py=${PYTHON3:-python3}
    if [ ! -x "$VENV/bin/python" ]; then
        "$py" -m venv "$VENV"
    fi
    if ! cmp -s "$TOP/requirements-test.txt" "$VENV/.requirements-test.txt" 2>/dev/null; then
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q -r "$TOP/requirements-test.txt"
        cp "$TOP/requirements-test.txt" "$VENV/.requirements-test.txt"
    fi
}

build_pack() {
    local kernel_srpm="" sign_key=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --sign-key) sign_key=${2:?--sign-key needs a gpg key id}; shift 2 ;;
            --sign-key=*) sign_key=${1#--sign-key=}; shift ;;
            --kernel-srpm) kernel_srpm=${2:?--kernel-srpm needs a file}; shift 2 ;;
            --kernel-srpm=*) kernel_srpm=${1#--kernel-srpm=}; shift ;;
            *) echo "build.sh: unknown option $1" >&2; exit 2 ;;
        esac
    done
    apt_install rpm genisoimage python3 createrepo-c rpmlint gnupg dnf xorriso
    mkdir -p "$OUT"
    "$TOP/rpm/build-userspace.sh" "$OUT"
    if [ -n "$kernel_srpm" ]; then
        python3 "$TOP/rpm/kernel/rebuild-kernel-srpm.py" --srpm "$kernel_srpm" --out "$OUT"
    fi
    "$TOP/pack/build-pack.sh" "$OUT"
    "$TOP/pack/build-update.sh" "$OUT" ${sign_key:+--sign-key "$sign_key"}
    "$TOP/pack/lint.sh" "$OUT"
    echo "build.sh: artefacts in $OUT"
}

cmd=${1:-build}
case "$cmd" in
    build|pack)
        shift || true
        build_pack "$@" ;;
    --kernel-srpm*|--sign-key*)
        build_pack "$@" ;;
    test)
        shift
        apt_install $APT_TEST_PACKAGES
        make_venv
        cd "$TOP"
        exec "$VENV/bin/python" -m pytest -ra "${@:-tests}" ;;
    demo)
        need_root demo
        apt_install iptables ebtables arptables iproute2 iputils-ping python3
        exec python3 "$TOP/tests/demo.py" ;;
    kernel-proof)  # [--break] [--rpms DIR] [--log FILE]: the 32-bit dom0 parts on a real i386 kernel
        shift
        need_root kernel-proof
        apt_install $KERNEL_PROOF_PACKAGES
        exec "$TOP/rpm/kernel/proof/run-proof.sh" "$@" ;;
    mutants)
        shift
        need_root mutants
        apt_install $APT_TEST_PACKAGES
        make_venv
        exec "$VENV/bin/python" "$TOP/tests/mutants.py" "$@" ;;
    bench)
        shift
        need_root bench
        apt_install $APT_TEST_PACKAGES
        make_venv
        exec "$VENV/bin/python" "$TOP/tests/bench/bench.py" "$@" ;;
    *)
        sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
