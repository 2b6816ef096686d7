#!/bin/bash
# Build the vif-rules product RPM and the legacy supplemental pack
# (XenServer 5.x-7.0, installed with xe-install-supplemental-pack):
#   pack/build-pack.sh OUTDIR
# OUTDIR may already hold the i686 ebtables/arptables RPMs (rpm/build-userspace.sh)
# and rebuilt kernel RPMs (rpm/kernel/rebuild-kernel-srpm.py); they go in too.
# Writes OUTDIR/vif-rules-<version>-<build>.noarch.rpm and OUTDIR/vif-rules-<version>.iso.
# PACK_BUILD sets the RPM release (default 1); SOURCE_DATE_EPOCH (default: the
# last commit's time) makes two builds of one commit give the same RPM bytes.
set -eu
PACKDIR=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$PACKDIR/.." && pwd)
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
. "$PACKDIR/common.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The product RPM, from the files of this checkout.
mkdir -p "$work/rpmbuild/SOURCES" "$work/src/vif-rules-$VERSION"
(cd "$TOP" && tar cf - --exclude=__pycache__ --exclude='*.pyc' xapi-plugin host-rules patches \
    rpm/host-rules.service rpm/vif-rules-lifecycle.in) |
    (cd "$work/src/vif-rules-$VERSION" && tar xf -)
tar czf "$work/rpmbuild/SOURCES/vif-rules-$VERSION.tar.gz" -C "$work/src" "vif-rules-$VERSION"
rpmbuild_quiet "$work/rpmbuild" "$TOP/rpm/vif-rules.spec"
cp "$work/rpmbuild/RPMS/noarch/vif-rules-$VERSION-$BUILD.noarch.rpm" "$OUT/"

# The pack: RPMs plus metadata at the root of an ISO.
stage="$work/pack"
mkdir -p "$stage"
cp "$OUT/vif-rules-$VERSION-$BUILD.noarch.rpm" "$stage/"
for rpm_file in "$OUT"/ebtables-*.i686.rpm "$OUT"/arptables-*.i686.rpm; do
    [ -f "$rpm_file" ] && cp "$rpm_file" "$stage/"
done
if [ -f "$OUT/kernel-packages.json" ]; then
    for rpm_file in "$OUT"/kernel-*.rpm; do
        [ -f "$rpm_file" ] && cp "$rpm_file" "$stage/"
    done
fi
{
    echo '<?xml version="1.0" ?>'
    echo '<packages>'
    for rpm_file in "$stage"/*.rpm; do
        base=$(basename "$rpm_file")
        label=$(rpm -qp --qf '%{NAME}' "$rpm_file" 2>/dev/null)
        size=$(stat -c %s "$rpm_file")
        md5=$(md5sum "$rpm_file" | cut -d' ' -f1)
        echo "  <package label=\"$label\" type=\"rpm\" size=\"$size\" md5=\"$md5\">$base</package>"
    done
    echo '</packages>'
} > "$stage/XS-PACKAGES"
sed -e "s/@VERSION@/$VERSION/g" -e "s/@BUILD@/$BUILD/g" "$PACKDIR/XS-REPOSITORY.in" > "$stage/XS-REPOSITORY"
install -m 0755 "$PACKDIR/install.sh" "$stage/install.sh"

iso="$OUT/vif-rules-$VERSION.iso"
genisoimage -quiet -J -R -V "vif-rules-$VERSION" -o "$iso" "$stage"
echo "build-pack: $iso"
