#!/bin/sh
# Supplemental pack installer (legacy layout, XenServer 5.x-6.x), run by
# xe-install-supplemental-pack from the mounted ISO. Checks the host's
# product version against XS-REPOSITORY's requires, every file's md5 against
# XS-PACKAGES, installs the RPMs and records the pack as installed.
#
# Test hooks (never set on a host): INSTALL_ROOT prefixes every host path,
# RPM_EXTRA_OPTS is added to the rpm command line.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=${INSTALL_ROOT:-}
inventory="$root/etc/xensource-inventory"
installed="$root/etc/xensource/installed-repos"

die() { echo "install.sh: $*" >&2; exit 1; }

[ -r "$inventory" ] || die "$inventory not found: not a XenServer host"
product_version=$(sed -n "s/^PRODUCT_VERSION=['\"]*\([^'\"]*\)['\"]*\$/\1/p" "$inventory")
[ -n "$product_version" ] || die "no PRODUCT_VERSION in $inventory"

attr() { # attr NAME LINE -> the value of NAME="..." in LINE
    echo "$2" | sed -n "s/.* $1=\"\([^\"]*\)\".*/\1/p"
}

# version_cmp A B: prints -1, 0 or 1 comparing dotted numbers
version_cmp() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        na = split(a, x, "."); nb = split(b, y, "."); n = (na > nb) ? na : nb
        for (i = 1; i <= n; i++) { p = x[i] + 0; q = y[i] + 0
            if (p < q) { print -1; exit } if (p > q) { print 1; exit } }
        print 0 }'
}

listing=$(mktemp)
trap 'rm -f "$listing"' EXIT
grep '<requires ' "$here/XS-REPOSITORY" > "$listing" || :
while read -r line; do
    originator=$(attr originator "$line"); name=$(attr name "$line")
    test_op=$(attr test "$line"); want=$(attr version "$line")
    if [ "$originator:$name" = "xs:main" ]; then
        have=$product_version
    else
        repo="$installed/$originator:$name/XS-REPOSITORY"
        [ -r "$repo" ] || die "requires $originator:$name, which is not installed"
        have=$(attr version "$(grep '<repository ' "$repo")")
    fi
    c=$(version_cmp "$have" "$want")
    case "$test_op:$c" in
        eq:0|ne:-1|ne:1|lt:-1|le:-1|le:0|gt:1|ge:1|ge:0) ;;
        *) die "requires $originator:$name $test_op $want, host has $have" ;;
    esac
done < "$listing"

grep -o '<package [^>]*>[^<]*</package>' "$here/XS-PACKAGES" > "$listing" || :
rpms=""
while read -r line; do
    file=$(echo "$line" | sed -n 's/.*>\([^<]*\)<\/package>/\1/p')
    md5=$(attr md5 "$line")
    [ -f "$here/$file" ] || die "$file is missing from the pack"
    actual=$(md5sum "$here/$file" | cut -d' ' -f1)
    [ "$actual" = "$md5" ] || die "$file: md5 $actual, XS-PACKAGES says $md5"
    rpms="$rpms $here/$file"
done < "$listing"
[ -n "$rpms" ] || die "XS-PACKAGES lists no package"

# Skip what is installed at this exact version, so re-running the pack works.
todo=""
for rpm_file in $rpms; do
    nvr=$(rpm -qp --qf '%{NAME}-%{VERSION}-%{RELEASE}' "$rpm_file" 2>/dev/null)
    if rpm ${root:+--root "$root"} -q "$nvr" >/dev/null 2>&1; then
        echo "install.sh: $nvr is installed already"
    else
        todo="$todo $rpm_file"
    fi
done
if [ -n "$todo" ]; then
    rpm ${root:+--root "$root"} ${RPM_EXTRA_OPTS:-} -Uhv $todo
fi

name=$(attr name "$(grep '<repository ' "$here/XS-REPOSITORY")")
originator=$(attr originator "$(grep '<repository ' "$here/XS-REPOSITORY")")
dest="$installed/$originator:$name"
mkdir -p "$dest"
cp "$here/XS-REPOSITORY" "$here/XS-PACKAGES" "$dest/"
if [ -z "$root" ] && command -v xe >/dev/null 2>&1; then
    xe host-refresh-pack-info host-uuid="$(. /etc/xensource-inventory; echo "$INSTALLATION_UUID")" || :
fi
echo "install.sh: vif-rules installed. Configure /etc/sysconfig/vif-rules (TRUSTED_INTERFACES),"
echo "then run: service host-rules start"
