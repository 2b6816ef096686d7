"""The supplemental pack: a real ISO with real RPMs, installed by its own
install.sh into a scratch root as xe-install-supplemental-pack would."""

import os
import shutil
import subprocess
import sys
import xmlrpc.client

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSION = "1.0.0"


def _run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=900, **kwargs)


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("building the pack installs build tools with apt: needs root")
    out = tmp_path_factory.mktemp("pack-out")
    for step in (["rpm/build-userspace.sh", str(out)], ["pack/build-pack.sh", str(out)]):
        result = _run([os.path.join(TOP, step[0])] + step[1:], cwd=TOP)
        assert result.returncode == 0, result.stderr[-3000:]
    iso = out / ("vif-rules-%s.iso" % VERSION)
    assert iso.exists()
    tree = tmp_path_factory.mktemp("pack-tree")
    listing = _run(["isoinfo", "-R", "-f", "-i", str(iso)]).stdout.split()
    for name in listing:
        data = subprocess.run(["isoinfo", "-R", "-x", name, "-i", str(iso)],
                              capture_output=True, check=True).stdout
        (tree / name.lstrip("/")).write_bytes(data)
    (tree / "install.sh").chmod(0o755)
    return {"iso": iso, "listing": sorted(listing), "tree": tree}


def _fake_host(tmp_path, product_version="5.6.100"):
    root = tmp_path / "host"
    (root / "etc" / "xensource").mkdir(parents=True)
    (root / "etc" / "xensource-inventory").write_text(
        "PRODUCT_BRAND='XenServer'\nPRODUCT_VERSION='%s'\nBUILD_NUMBER='39265p'\n"
        "INSTALLATION_UUID='0e3b9d6a-5f0c-4f4e-9d59-9f3b0a1c2d3e'\n" % product_version)
    subprocess.run(["rpm", "--root", str(root), "--initdb"], check=True)
    return root


def _install(pack_tree, root):
    env = dict(os.environ, INSTALL_ROOT=str(root),
               RPM_EXTRA_OPTS="--nodeps --noscripts --ignorearch")
    return _run([str(pack_tree / "install.sh")], env=env, cwd=str(pack_tree))


def test_iso_holds_the_rpms_and_metadata(pack):
    assert pack["listing"] == sorted([
        "/XS-PACKAGES", "/XS-REPOSITORY", "/install.sh",
        "/arptables-0.0.5-1.vifrules.i686.rpm", "/ebtables-2.0.11-1.vifrules.i686.rpm",
        "/vif-rules-%s-1.noarch.rpm" % VERSION])
    packages = (pack["tree"] / "XS-PACKAGES").read_text()
    for rpm_file in pack["tree"].glob("*.rpm"):
        md5 = _run(["md5sum", str(rpm_file)]).stdout.split()[0]
        assert 'md5="%s">%s</package>' % (md5, rpm_file.name) in packages
        assert 'size="%d"' % rpm_file.stat().st_size in packages
    repository = (pack["tree"] / "XS-REPOSITORY").read_text()
    assert 'originator="vif-rules" name="vif-rules"' in repository
    assert '<requires originator="xs" name="main" test="ge"' in repository


def test_product_rpm_metadata(pack):
    rpm_file = pack["tree"] / ("vif-rules-%s-1.noarch.rpm" % VERSION)
    info = _run(["rpm", "-qp", "--qf", "%{ARCH} %{PAYLOADCOMPRESSOR}\n", str(rpm_file)]).stdout
    assert info.split() == ["noarch", "gzip"]
    files = _run(["rpm", "-qplv", str(rpm_file)]).stdout
    assert "-rwxr-xr-x" in [l.split()[0] for l in files.splitlines()
                            if l.endswith("/etc/xapi.d/plugins/vif_rules")]
    config_files = _run(["rpm", "-qpc", str(rpm_file)]).stdout.split()
    assert config_files == ["/etc/sysconfig/vif-rules"]


def test_install_sh_installs_and_records_the_pack(pack, tmp_path):
    root = _fake_host(tmp_path)
    result = _install(pack["tree"], root)
    assert result.returncode == 0, result.stderr
    for path, mode in (("etc/xapi.d/plugins/vif_rules", 0o755),
                       ("etc/xensource/scripts/vif_rules.py", 0o755),
                       ("etc/rc.d/init.d/host-rules", 0o755),
                       ("etc/sysconfig/vif-rules", 0o644),
                       ("usr/lib/vif-rules/vifrules/engine.py", 0o644),
                       ("sbin/arptables", 0o755), ("sbin/ebtables", 0o755)):
        assert (root / path).exists(), path
        assert (root / path).stat().st_mode & 0o777 == mode, path
    recorded = root / "etc/xensource/installed-repos/vif-rules:vif-rules"
    assert (recorded / "XS-REPOSITORY").read_text() == (pack["tree"] / "XS-REPOSITORY").read_text()
    installed = _run(["rpm", "--root", str(root), "-qa", "--qf", "%{NAME}\n"]).stdout.split()
    assert sorted(installed) == ["arptables", "ebtables", "vif-rules"]
    # running it again is harmless
    again = _install(pack["tree"], root)
    assert again.returncode == 0 and "installed already" in again.stdout


def test_installed_files_work_from_their_installed_places(pack, tmp_path):
    root = _fake_host(tmp_path)
    assert _install(pack["tree"], root).returncode == 0
    library = str(root / "usr/lib/vif-rules")
    usage = _run([sys.executable, str(root / "usr/lib/vif-rules/host_rules.py"), "bogus"])
    assert usage.returncode == 2 and "usage: host-rules" in usage.stderr
    call = xmlrpc.client.dumps(("OpaqueRef:session", {}), "get_version")
    env = dict(os.environ, PYTHONPATH="%s:%s" % (library, os.path.join(TOP, "tests", "xapi_standin")))
    result = _run([sys.executable, str(root / "etc/xapi.d/plugins/vif_rules"), call], env=env)
    assert result.returncode == 0, result.stderr
    response = xmlrpc.client.loads(result.stdout)[0][0]
    assert response["Status"] == "Success" and '"api_version": "1.0"' in response["Value"]


def test_install_sh_refuses_an_older_host_and_a_corrupt_pack(pack, tmp_path):
    old = _fake_host(tmp_path / "old", product_version="5.0.0")
    result = _install(pack["tree"], old)
    assert result.returncode != 0 and "requires xs:main ge 5.5.0" in result.stderr
    corrupt = tmp_path / "corrupt"
    shutil.copytree(pack["tree"], corrupt)
    rpm_file = corrupt / ("vif-rules-%s-1.noarch.rpm" % VERSION)
    data = bytearray(rpm_file.read_bytes())
    data[-1] ^= 0xff
    rpm_file.write_bytes(bytes(data))
    root = _fake_host(tmp_path / "new")
    result = _install(corrupt, root)
    assert result.returncode != 0 and "md5" in result.stderr
    assert _run(["rpm", "--root", str(root), "-qa"]).stdout.strip() == ""
