# Shared by pack/build-pack.sh and pack/build-update.sh (sourced; needs TOP).
VERSION=$(sed -n 's/^VERSION = "\(.*\)"$/\1/p' "$TOP/xapi-plugin/vifrules/__init__.py")
BUILD=${PACK_BUILD:-1}
[ -n "$VERSION" ] || { echo "build: no VERSION in vifrules/__init__.py" >&2; exit 1; }
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$TOP" log -1 --format=%ct 2>/dev/null || :)
    SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1764547200}
fi
export SOURCE_DATE_EPOCH

# rpmbuild_quiet TOPDIR SPEC [--define 'k v' ...]: a binary RPM, same bytes each time.
rpmbuild_quiet() {
    local topdir=$1 spec=$2
    shift 2
    rpmbuild -bb --quiet --define "_topdir $topdir" --define "version $VERSION" \
        --define "release $BUILD" "$@" "$spec" >/dev/null
}
