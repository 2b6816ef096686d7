#!/bin/bash
# rpmlint on every RPM the build made: pack/lint.sh OUTDIR
# The product's RPMs (vif-rules, update-vif-rules, control-vif-rules) against
# pack/rpmlintrc, the 32-bit ebtables/arptables against pack/rpmlintrc-userspace.
# No error and no warning passes unless the rpmlintrc filters it, with a reason.
# (Rebuilt vendor kernel RPMs are the vendor's spec: not linted here.)
set -eu
PACKDIR=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
out=$1
status=0

lint() { # lint RPMLINTRC RPM...
    local rc=$1 report
    shift
    [ $# -gt 0 ] || return 0
    if ! report=$(rpmlint -r "$rc" "$@" 2>&1) || echo "$report" | grep -q ': [EW]: '; then
        echo "$report" >&2
        echo "lint: rpmlint findings not explained in $(basename "$rc")" >&2
        status=1
        return 0
    fi
    echo "lint: rpmlint clean: $(for f in "$@"; do basename "$f"; done | tr '\n' ' ')"
}

shopt -s nullglob
lint "$PACKDIR/rpmlintrc" "$out"/vif-rules-*.rpm "$out"/update-vif-rules-*.rpm \
    "$out"/control-vif-rules-*.rpm
lint "$PACKDIR/rpmlintrc-userspace" "$out"/ebtables-*.i686.rpm "$out"/arptables-*.i686.rpm
exit $status
