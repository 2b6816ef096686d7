#!/bin/bash
# Build the vif-rules update ISO for XenServer 7.1+ and XCP-ng (xe update-upload):
#   pack/build-update.sh OUTDIR [--sign-key KEYID]
# from OUTDIR/vif-rules-<version>-<build>.noarch.rpm (pack/build-pack.sh makes it).
# Layout as XAPI reads it: update.xml at the root, Packages/ (the product RPM,
# the update-vif-rules meta RPM, the control-vif-rules precheck RPM), repodata/
# (createrepo_c, comps group "update"). With a key (gpg's default home, or
# GNUPGHOME; the key must have no passphrase or an agent that has it), the RPMs
# are signed, update.xml.asc and repodata/repomd.xml.asc are detached
# signatures and the public key is on the ISO as RPM-GPG-KEY-vif-rules.
# Writes OUTDIR/vif-rules-<version>-update.iso.
set -eu
PACKDIR=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$PACKDIR/.." && pwd)
usage() { echo "usage: $0 OUTDIR [--sign-key KEYID]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$(cd "$1" && pwd)
shift
KEY=${VIF_RULES_SIGN_KEY:-}
while [ $# -gt 0 ]; do
    case "$1" in
        --sign-key) KEY=${2:?--sign-key needs a key id}; shift 2 ;;
        --sign-key=*) KEY=${1#--sign-key=}; shift ;;
        *) usage ;;
    esac
done
. "$PACKDIR/common.sh"
LABEL=vif-rules
KEYFILE=RPM-GPG-KEY-vif-rules
product="$OUT/vif-rules-$VERSION-$BUILD.noarch.rpm"
[ -f "$product" ] || { echo "build-update: $product not found (run pack/build-pack.sh)" >&2; exit 1; }
# One uuid per version-release, the same on every build of it.
UUID=$(python3 -c 'import sys, uuid; print(uuid.uuid5(uuid.NAMESPACE_URL, "vif-rules-update:" + sys.argv[1]))' "$VERSION-$BUILD")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage="$work/iso"
mkdir -p "$stage/Packages" "$work/rpmbuild/SOURCES"
cp "$product" "$stage/Packages/"
cp "$PACKDIR/precheck" "$work/rpmbuild/SOURCES/precheck"
for spec in update-vif-rules control-vif-rules; do
    rpmbuild_quiet "$work/rpmbuild" "$TOP/rpm/$spec.spec" --define "update_uuid $UUID"
    cp "$work/rpmbuild/RPMS/noarch/$spec-$VERSION-$BUILD.noarch.rpm" "$stage/Packages/"
done

size=0
for rpm_file in "$stage"/Packages/*.rpm; do
    size=$((size + $(rpm -qp --qf '%{SIZE}' "$rpm_file")))
done
key_attr=""
[ -n "$KEY" ] && key_attr=" key=\"$KEYFILE\""
cat > "$stage/update.xml" <<XML
<?xml version="1.0" ?>
<update uuid="$UUID" name-label="$LABEL" version="$VERSION" installation-size="$size" after-apply-guidance=""$key_attr control="control-$LABEL">
  <name-description>vif-rules $VERSION-$BUILD: per-VIF network isolation for guests (ebtables, iptables, ip6tables, arptables)</name-description>
</update>
XML
cat > "$work/groups.xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE comps PUBLIC "-//Red Hat, Inc.//DTD Comps info//EN" "comps.dtd">
<comps>
  <group>
    <id>update</id>
    <name>update</name>
    <default>true</default>
    <uservisible>true</uservisible>
    <packagelist>
      <packagereq type="mandatory">update-$LABEL</packagereq>
    </packagelist>
  </group>
</comps>
XML

if [ -n "$KEY" ]; then
    rpmsign --addsign --define "_gpg_name $KEY" --define "_gpg_path ${GNUPGHOME:-$HOME/.gnupg}" \
        --define "__gpg $(command -v gpg)" \
        "$stage"/Packages/*.rpm >/dev/null
fi
createrepo_c --quiet --groupfile "$work/groups.xml" --set-timestamp-to-revision \
    --revision "$SOURCE_DATE_EPOCH" "$stage" >/dev/null
if [ -n "$KEY" ]; then
    gpg --batch --yes --armor --local-user "$KEY" --detach-sign -o "$stage/update.xml.asc" "$stage/update.xml"
    gpg --batch --yes --armor --local-user "$KEY" --detach-sign -o "$stage/repodata/repomd.xml.asc" \
        "$stage/repodata/repomd.xml"
    gpg --batch --armor --export "$KEY" > "$stage/$KEYFILE"
    cp "$stage/$KEYFILE" "$OUT/"
else
    for i in 1 2 3; do
        echo "build-update: WARNING: THE UPDATE ISO IS NOT SIGNED. XenServer 7.1+ and XCP-ng refuse it" \
             "(Invalid signature). Sign it: ./build.sh --sign-key KEYID" >&2
    done
fi

# Beside the ISO too: for rpmlint, and for XCP-ng's yum localinstall.
cp "$stage"/Packages/update-$LABEL-*.rpm "$stage"/Packages/control-$LABEL-*.rpm "$OUT/"
iso="$OUT/vif-rules-$VERSION-update.iso"
xorriso -as mkisofs -quiet -J -R -V "vif-rules-$VERSION" -o "$iso" "$stage" 2>/dev/null
echo "build-update: $iso (uuid $UUID${KEY:+, signed by $KEY})"
