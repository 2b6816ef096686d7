#!/bin/bash
# Build the vif-rules supplemental pack (legacy layout, XenServer 5.x-6.x):
#   pack/build-pack.sh OUTDIR
# OUTDIR may already hold the i686 ebtables/arptables RPMs (rpm/build-userspace.sh)
# and rebuilt kernel RPMs (rpm/kernel/rebuild-kernel-srpm.py); they go in too.
# Writes OUTDIR/vif-rules-<version>.noarch RPM and OUTDIR/vif-rules-<version>.iso.
set -eu
PACKDIR=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$PACKDIR/.." && pwd)
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
VERSION=$(sed -n 's/^VERSION = "\(.*\)"$/\1/p' "$TOP/xapi-plugin/vifrules/__init__.py")
BUILD=${PACK_BUILD:-1}
[ -n "$VERSION" ] || { echo "build-pack: no VERSION in vifrules/__init__.py" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The product RPM, from the files of this checkout.
mkdir -p "$work/rpmbuild/SOURCES" "$work/src/vif-rules-$VERSION"
(cd "$TOP" && tar cf - --exclude=__pycache__ --exclude='*.pyc' xapi-plugin host-rules) |
    (cd "$work/src/vif-rules-$VERSION" && tar xf -)
tar czf "$work/rpmbuild/SOURCES/vif-rules-$VERSION.tar.gz" -C "$work/src" "vif-rules-$VERSION"
rpmbuild -bb --quiet --define "_topdir $work/rpmbuild" --define "version $VERSION" \
    --define "release $BUILD" "$TOP/rpm/vif-rules.spec" >/dev/null
product=$(find "$work/rpmbuild/RPMS" -name "vif-rules-$VERSION-$BUILD.noarch.rpm")
cp "$product" "$OUT/"

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
