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
def pack(tmp_path_factory, userspace_rpms):
    out = tmp_path_factory.mktemp("pack-out")
    for rpm_file in userspace_rpms:
        shutil.copy(rpm_file, str(out))
    result = _run([os.path.join(TOP, "pack/build-pack.sh"), str(out)], cwd=TOP)
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
    return {"iso": iso, "listing": sorted(listing), "tree": tree, "out": out}


def _fake_host(tmp_path, product_version="5.6.100"):
    root = tmp_path / "host"
    (root / "etc" / "xensource").mkdir(parents=True)
    (root / "etc" / "xensource-inventory").write_text(
        "PRODUCT_BRAND='XenServer'\nPRODUCT_VERSION='%s'\nBUILD_NUMBER='39265p'\n"
        "INSTALLATION_UUID='0e3b9d6a-5f0c-4f4e-9d59-9f3b0a1c2d3e'\n" % product_version)
    subprocess.run(["rpm", "--root", str(root), "--initdb"], check=True)
    return root


@pytest.fixture(scope="module")
def host_packages(tmp_path_factory):
    """What a 5.x dom0's rpmdb has that the product requires: iptables, and
    bash for /bin/sh (ebtables and arptables come from the pack itself)."""
    import dom0root
    return dom0root.build_fake_providers(tmp_path_factory.mktemp("fakes"), ("iptables", "bash"))


def _fake_host_with_packages(tmp_path, host_packages, product_version="5.6.100"):
    root = _fake_host(tmp_path, product_version)
    subprocess.run(["rpm", "--root", str(root), "-i"] + sorted(host_packages.values()),
                   check=True)
    return root


def _install(pack_tree, root):
    # Dependencies resolved for real (the pack's own ebtables/arptables satisfy
    # the product's Requires); the scriptlets need a whole dom0 root and run in
    # tests/test_rpm_lifecycle.py.
    env = dict(os.environ, INSTALL_ROOT=str(root), RPM_EXTRA_OPTS="--noscripts --ignorearch")
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
    requires = _run(["rpm", "-qpR", str(rpm_file)]).stdout.split()
    for name in ("iptables", "ebtables", "arptables"):
        assert name in requires
    # what rpm 4.4 (CentOS 5) cannot read must not be in it
    assert not [r for r in requires if r.startswith("rpmlib(") and ("Rich" in r or "Zstd" in r
                                                                  or "FileDigests" in r)]
    files = _run(["rpm", "-qpl", str(rpm_file)]).stdout.split()
    assert "/usr/lib/vif-rules/vif-patch" in files
    patches = [f for f in files if f.startswith("/usr/lib/vif-rules/patches/")]
    assert sorted(os.path.basename(f) for f in patches) == sorted(
        f for f in os.listdir(os.path.join(TOP, "patches")) if f.endswith(".patch"))


def test_two_builds_give_byte_identical_rpms(tmp_path):
    """SOURCE_DATE_EPOCH (the last commit's time) fixes every date in the RPM."""
    env = dict(os.environ, SOURCE_DATE_EPOCH="1764547200")
    built = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = _run([os.path.join(TOP, "pack/build-pack.sh"), str(out)], env=env)
        assert result.returncode == 0, result.stderr
        built.append((out / ("vif-rules-%s-1.noarch.rpm" % VERSION)).read_bytes())
    assert built[0] == built[1]
    buildtime = _run(["rpm", "-qp", "--qf", "%{BUILDTIME}",
                      str(tmp_path / "a" / ("vif-rules-%s-1.noarch.rpm" % VERSION))]).stdout
    assert buildtime == "1764547200"


def test_rpmlint_finds_nothing_unexplained(pack, tmp_path):
    if shutil.which("rpmlint") is None:
        pytest.skip("rpmlint is not installed (./build.sh test installs it)")
    out = tmp_path / "out"
    shutil.copytree(str(pack["out"]), str(out))
    result = _run([os.path.join(TOP, "pack/build-update.sh"), str(out)])
    assert result.returncode == 0, result.stderr
    lint = _run([os.path.join(TOP, "pack/lint.sh"), str(out)])
    assert lint.returncode == 0, lint.stderr
    assert lint.stdout.count("rpmlint clean") == 2
    assert "control-vif-rules" in lint.stdout and "ebtables-" in lint.stdout


def test_install_sh_installs_and_records_the_pack(pack, tmp_path, host_packages):
    root = _fake_host_with_packages(tmp_path, host_packages)
    result = _install(pack["tree"], root)
    assert result.returncode == 0, result.stderr
    for path, mode in (("usr/lib/vif-rules/templates/vif_rules", 0o755),
                       ("usr/lib/vif-rules/templates/vif_rules.py", 0o755),
                       ("usr/lib/vif-rules/templates/vif-patch", 0o755),
                       ("etc/rc.d/init.d/host-rules", 0o755),
                       ("etc/sysconfig/vif-rules", 0o644),
                       ("usr/lib/vif-rules/vifrules/engine.py", 0o644),
                       ("usr/lib/vif-rules/vifrules/llc-drop.bpf", 0o644),
                       ("sbin/arptables", 0o755), ("sbin/ebtables", 0o755)):
        assert (root / path).exists(), path
        assert (root / path).stat().st_mode & 0o777 == mode, path
    recorded = root / "etc/xensource/installed-repos/vif-rules:vif-rules"
    assert (recorded / "XS-REPOSITORY").read_text() == (pack["tree"] / "XS-REPOSITORY").read_text()
    installed = _run(["rpm", "--root", str(root), "-qa", "--qf", "%{NAME}\n"]).stdout.split()
    assert sorted(installed) == ["arptables", "bash", "ebtables", "iptables", "vif-rules"]
    # running it again is harmless
    again = _install(pack["tree"], root)
    assert again.returncode == 0 and "installed already" in again.stdout


def test_installed_files_work_from_their_installed_places(pack, tmp_path, host_packages):
    root = _fake_host_with_packages(tmp_path, host_packages)
    assert _install(pack["tree"], root).returncode == 0
    library = str(root / "usr/lib/vif-rules")
    usage = _run([sys.executable, str(root / "usr/lib/vif-rules/host_rules.py"), "bogus"])
    assert usage.returncode == 2 and "usage: host-rules" in usage.stderr
    call = xmlrpc.client.dumps(("OpaqueRef:session", {}), "get_version")
    env = dict(os.environ, PYTHONPATH="%s:%s" % (library, os.path.join(TOP, "tests", "xapi_standin")))
    result = _run([sys.executable, str(root / "usr/lib/vif-rules/templates/vif_rules"), call], env=env)
    assert result.returncode == 0, result.stderr
    response = xmlrpc.client.loads(result.stdout)[0][0]
    assert response["Status"] == "Success" and '"api_version": "1.0"' in response["Value"]


def test_install_sh_refuses_an_older_host_and_a_corrupt_pack(pack, tmp_path, host_packages):
    old = _fake_host_with_packages(tmp_path / "old", host_packages, product_version="5.0.0")
    result = _install(pack["tree"], old)
    assert result.returncode != 0 and "requires xs:main ge 5.5.0" in result.stderr
    assert "vif-rules" not in _run(["rpm", "--root", str(old), "-qa"]).stdout
    newer = _fake_host_with_packages(tmp_path / "newer", host_packages, product_version="7.6.0")
    result = _install(pack["tree"], newer)
    assert result.returncode != 0 and "requires xs:main lt 7.1.0, host has 7.6.0" in result.stderr
    assert "vif-rules" not in _run(["rpm", "--root", str(newer), "-qa"]).stdout
    corrupt = tmp_path / "corrupt"
    shutil.copytree(pack["tree"], corrupt)
    rpm_file = corrupt / ("vif-rules-%s-1.noarch.rpm" % VERSION)
    data = bytearray(rpm_file.read_bytes())
    data[-1] ^= 0xff
    rpm_file.write_bytes(bytes(data))
    root = _fake_host_with_packages(tmp_path / "new", host_packages)
    result = _install(corrupt, root)
    assert result.returncode != 0 and "md5" in result.stderr
    assert "vif-rules" not in _run(["rpm", "--root", str(root), "-qa"]).stdout


def test_systemd_unit_runs_before_any_vm_and_never_opens_the_host(pack, tmp_path):
    """The unit the RPM installs (read from the RPM): ordered before xenopsd and
    xapi start VMs, enabled for boot, and without ExecStop (stopping it or
    shutting down must not open the host)."""
    rpm_file = pack["tree"] / ("vif-rules-%s-1.noarch.rpm" % VERSION)
    subprocess.run("rpm2cpio %s | cpio -idm --quiet ./usr/lib/systemd/system/host-rules.service"
                   % rpm_file, shell=True, cwd=str(tmp_path), check=True)
    unit = (tmp_path / "usr/lib/systemd/system/host-rules.service").read_text()
    keys = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).extend(value.split())
    for service in ("xapi.service", "xenopsd.service", "xenopsd-xc.service",
                    "xcp-networkd.service"):
        assert service in keys["Before"], service
    assert keys["ExecStart"] == ["/etc/rc.d/init.d/host-rules", "start"]
    assert "ExecStop" not in keys
    assert keys["WantedBy"] == ["multi-user.target"] and keys["DefaultDependencies"] == ["no"]
