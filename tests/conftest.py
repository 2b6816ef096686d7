import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)
sys.path.insert(0, os.path.join(os.path.dirname(TESTS), "xapi-plugin"))

import netbed  # noqa: E402

_reason = []


def bed_unavailable():
    if not _reason:
        _reason.append(netbed.available())
    return _reason[0]


@pytest.fixture
def require_netns():
    reason = bed_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(params=["legacy", "nft"])
def bed(request, tmp_path, require_netns):
    with netbed.NetBed(str(tmp_path), backend=request.param) as test_bed:
        yield test_bed


@pytest.fixture
def legacy_bed(tmp_path, require_netns):
    with netbed.NetBed(str(tmp_path), backend="legacy") as test_bed:
        yield test_bed


@pytest.fixture(scope="session")
def userspace_rpms(tmp_path_factory):
    """The pack's i686 ebtables/arptables RPMs (rpm/build-userspace.sh), built
    once for every test that installs the pack."""
    import glob
    import subprocess
    if os.geteuid() != 0:
        pytest.skip("building the userspace RPMs installs build tools with apt: needs root")
    out = tmp_path_factory.mktemp("userspace-rpms")
    top = os.path.dirname(TESTS)
    result = subprocess.run([os.path.join(top, "rpm", "build-userspace.sh"), str(out)],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return sorted(glob.glob(str(out / "*.i686.rpm")))
