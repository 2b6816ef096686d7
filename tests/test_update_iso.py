"""The update ISO for XenServer 7.1+ and XCP-ng, checked as XAPI checks and
applies it: update.xml's fields, gpg --verify of update.xml.asc and
repodata/repomd.xml.asc against a keyring where the key has ultimate trust
(GOODSIG and TRUST_ULTIMATE, as xapi's gpg.ml wants), then the real dnf
installing the group @update from the ISO's repository into a sandbox 8.3
root with gpgcheck and repo_gpgcheck on."""

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

import dom0root
from test_rpm_lifecycle import Host  # the same sandbox host

TOP = dom0root.TOP
VERSION = dom0root.VERSION
KEYFILE = "RPM-GPG-KEY-vif-rules"


def _run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)


def _extract(iso, dest):
    os.makedirs(dest)
    result = _run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(dest)])
    assert result.returncode == 0, result.stderr
    for dirpath, dirnames, filenames in os.walk(dest):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    return dest


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory):
    if shutil.which("gpg") is None or shutil.which("createrepo_c") is None:
        pytest.skip("gpg and createrepo_c are needed (./build.sh test installs them)")
    home = str(tmp_path_factory.mktemp("gnupg"))
    os.chmod(home, 0o700)
    result = _run(["gpg", "--homedir", home, "--batch", "--passphrase", "", "--quick-gen-key",
                   "vif-rules test signing <signing@example.org>", "rsa2048", "sign", "never"])
    assert result.returncode == 0, result.stderr
    listing = _run(["gpg", "--homedir", home, "--with-colons", "--list-keys"]).stdout
    fingerprint = [l.split(":")[9] for l in listing.splitlines() if l.startswith("fpr:")][0]
    return {"home": home, "fingerprint": fingerprint}


@pytest.fixture(scope="module")
def isos(tmp_path_factory, signing_key):
    if os.geteuid() != 0:
        pytest.skip("building the RPMs and ISOs needs root (apt-installed tools)")
    out = tmp_path_factory.mktemp("update-out")
    dom0root.build_product(out, 1)
    env = dict(os.environ, GNUPGHOME=signing_key["home"])
    signed = _run([os.path.join(TOP, "pack", "build-update.sh"), str(out), "--sign-key",
                   signing_key["fingerprint"]], env=env)
    assert signed.returncode == 0, signed.stderr
    signed_tree = _extract(out / ("vif-rules-%s-update.iso" % VERSION), out / "signed")
    unsigned_out = tmp_path_factory.mktemp("update-unsigned")
    shutil.copy(str(out / ("vif-rules-%s-1.noarch.rpm" % VERSION)), str(unsigned_out))
    unsigned = _run([os.path.join(TOP, "pack", "build-update.sh"), str(unsigned_out)])
    assert unsigned.returncode == 0, unsigned.stderr
    unsigned_tree = _extract(unsigned_out / ("vif-rules-%s-update.iso" % VERSION),
                             unsigned_out / "tree")
    return {"signed": signed_tree, "unsigned": unsigned_tree, "unsigned_stderr": unsigned.stderr}


def _update_xml(tree):
    return ET.parse(os.path.join(str(tree), "update.xml")).getroot()


def test_update_xml_as_xapi_parses_it(isos):
    update = _update_xml(isos["signed"])
    assert update.tag == "update"
    for attribute in ("uuid", "name-label", "version"):   # INVALID_UPDATE without them
        assert update.get(attribute), attribute
    assert update.get("name-label") == "vif-rules" and update.get("version") == VERSION
    assert int(update.get("installation-size")) > 0
    assert update.get("after-apply-guidance") == ""        # nothing to restart
    assert update.get("key") == KEYFILE and os.path.isfile(os.path.join(isos["signed"], KEYFILE))
    assert update.get("control") == "control-vif-rules"
    assert VERSION in update.find("name-description").text
    # one uuid per version-release: the unsigned build of it has the same
    assert _update_xml(isos["unsigned"]).get("uuid") == update.get("uuid")
    assert _update_xml(isos["unsigned"]).get("key") is None


def test_repository_layout_and_group(isos):
    tree = isos["signed"]
    packages = sorted(os.listdir(os.path.join(tree, "Packages")))
    assert packages == ["control-vif-rules-%s-1.noarch.rpm" % VERSION,
                        "update-vif-rules-%s-1.noarch.rpm" % VERSION,
                        "vif-rules-%s-1.noarch.rpm" % VERSION]
    repomd = open(os.path.join(tree, "repodata", "repomd.xml")).read()
    assert 'type="group"' in repomd
    groups = [f for f in os.listdir(os.path.join(tree, "repodata")) if f.endswith("groups.xml")]
    comps = ET.parse(os.path.join(tree, "repodata", groups[0])).getroot()
    group = comps.find("group")
    assert group.find("id").text == "update"
    assert [(p.get("type"), p.text) for p in group.find("packagelist")] == [
        ("mandatory", "update-vif-rules")]
    meta = os.path.join(tree, "Packages", packages[1])
    requires = _run(["rpm", "-qp", "--requires", meta]).stdout.split("\n")
    assert "vif-rules = %s-1" % VERSION in requires
    control = os.path.join(tree, "Packages", packages[0])
    uuid = _update_xml(tree).get("uuid")
    assert "/var/update/%s/precheck" % uuid in _run(["rpm", "-qpl", control]).stdout.split()
    for rpm_file in packages:   # signed with the key given to the build
        info = _run(["rpm", "-qp", "--qf", "%{RSAHEADER:pgpsig}", os.path.join(tree, "Packages",
                                                                            rpm_file)]).stdout
        assert "Key ID" in info, (rpm_file, info)


def test_unsigned_build_says_so_loudly(isos):
    assert "THE UPDATE ISO IS NOT SIGNED" in isos["unsigned_stderr"]
    names = os.listdir(isos["unsigned"])
    assert "update.xml.asc" not in names and KEYFILE not in names
    assert not os.path.exists(os.path.join(isos["unsigned"], "repodata", "repomd.xml.asc"))


@pytest.fixture
def xapi_keyring(tmp_path, isos, signing_key):
    """/opt/xensource/gpg as import-update-key leaves it: the key imported, trust 5."""
    home = str(tmp_path / "xapi-gpg")
    os.makedirs(home, 0o700)
    key = os.path.join(isos["signed"], KEYFILE)
    assert _run(["gpg", "--homedir", home, "--batch", "--import", key]).returncode == 0
    trust = _run(["gpg", "--homedir", home, "--batch", "--import-ownertrust"],
                 input="%s:6:\n" % signing_key["fingerprint"])
    assert trust.returncode == 0, trust.stderr
    return home


def _xapi_verify(home, signed_file, signature):
    """xapi's check (gpg.ml): gpg's status output must hold GOODSIG and TRUST_ULTIMATE."""
    result = _run(["gpg", "--homedir", home, "--no-default-keyring", "--keyring", "pubring.kbx",
                   "--status-fd", "1", "--verify", signature, signed_file])
    return "[GNUPG:] GOODSIG" in result.stdout and "[GNUPG:] TRUST_ULTIMATE" in result.stdout


def test_signatures_verify_as_xapi_verifies_them(isos, xapi_keyring, tmp_path):
    tree = isos["signed"]
    for name in ("update.xml", "repodata/repomd.xml"):
        path = os.path.join(tree, name)
        assert _xapi_verify(xapi_keyring, path, path + ".asc"), name
        corrupt = str(tmp_path / os.path.basename(name))
        data = open(path).read()
        with open(corrupt, "w") as handle:
            handle.write(data.replace(VERSION, VERSION + "9", 1) if name == "update.xml"
                         else data.replace("<revision>", "<revision>1", 1))
        assert open(corrupt).read() != data
        assert not _xapi_verify(xapi_keyring, corrupt, path + ".asc"), "corrupt " + name


def test_signatures_need_the_key_trusted_ultimately(isos, tmp_path):
    home = str(tmp_path / "untrusted")
    os.makedirs(home, 0o700)
    _run(["gpg", "--homedir", home, "--batch", "--import", os.path.join(isos["signed"], KEYFILE)])
    path = os.path.join(isos["signed"], "update.xml")
    assert not _xapi_verify(home, path, path + ".asc")


def test_precheck_refuses_unsupported_hosts(isos, tmp_path):
    tree = isos["signed"]
    control = [f for f in os.listdir(os.path.join(tree, "Packages")) if f.startswith("control-")]
    unpacked = tmp_path / "control"
    unpacked.mkdir()
    cpio = subprocess.run("rpm2cpio %s | cpio -idm --quiet" % os.path.join(tree, "Packages",
                                                                          control[0]),
                          shell=True, cwd=str(unpacked))
    assert cpio.returncode == 0
    precheck = str(unpacked / "var" / "update" / _update_xml(tree).get("uuid") / "precheck")

    def run_on(version, backend="bridge"):
        host = tmp_path / ("host-%s-%s" % (version, backend))
        (host / "etc" / "xensource").mkdir(parents=True)
        (host / "etc" / "xensource-inventory").write_text("PRODUCT_VERSION='%s'\n" % version)
        (host / "etc" / "xensource" / "network.conf").write_text(backend + "\n")
        return _run(["sh", precheck], env=dict(os.environ, PRECHECK_ROOT=str(host)))

    for version in ("7.1.0", "7.6.0", "8.2.1", "8.3.0"):
        assert run_on(version).returncode == 0, version
    for version in ("6.2.0", "7.0.0", "5.6.100"):
        refused = run_on(version)
        assert refused.returncode == 1, version
        assert ('<error errorcode="UPDATE_PRECHECK_FAILED_WRONG_SERVER_VERSION"><found>%s</found>'
                % version) in refused.stdout
    assert run_on("8.3.0", "openvswitch").returncode == 0   # both backends are supported


def _dnf_config(path, tree, cache):
    with open(path, "w") as handle:
        handle.write("[main]\ngpgcheck=1\nrepo_gpgcheck=1\nreposdir=/nonexistent\n"
                     "cachedir=%s\nkeepcache=0\ninstall_weak_deps=False\n\n"
                     "[vif-rules]\nname=vif-rules\nbaseurl=file://%s\nenabled=1\n"
                     "gpgcheck=1\nrepo_gpgcheck=1\ngpgkey=file://%s/%s\n"
                     % (cache, tree, tree, KEYFILE))


@pytest.fixture(scope="module")
def dom0_parts(tmp_path_factory):
    if dom0root.unavailable():
        pytest.skip(dom0root.unavailable())
    if shutil.which("dnf") is None:
        pytest.skip("dnf is not installed (./build.sh test installs it)")
    work = tmp_path_factory.mktemp("dom0-parts")
    return {"fakes": dom0root.build_fake_providers(work),
            "base": dom0root.prepare_base(str(work / "base"))}


@pytest.fixture
def dom0(tmp_path, dom0_parts):
    """A sandbox 8.3 host (python2 and python3) with XAPI and two running guests."""
    host = Host(tmp_path / "host", "8.3", dom0_parts)
    yield host
    host.destroy()


def _dnf(host, config, *args):
    return host.root.run(["dnf", "-y", "-c", config, "--installroot", host.root.path,
                          "--releasever", "8", "--noplugins"] + list(args), check=False)


def test_dnf_installs_the_update_group_with_signatures_checked(isos, dom0, tmp_path):
    config = str(tmp_path / "dnf.conf")
    _dnf_config(config, isos["signed"], tmp_path / "cache")
    result = _dnf(dom0, config, "install", "@update")
    assert result.returncode == 0, result.stdout + result.stderr
    installed = dom0.root.installed()
    assert "update-vif-rules-%s-1" % VERSION in installed
    assert "vif-rules-%s-1" % VERSION in installed
    assert "running VIF(s) protected" in result.stdout, result.stdout
    assert dom0.root.read("/etc/xensource/scripts/vif_rules.py").startswith("#!/usr/bin/python2")


def test_dnf_refuses_a_corrupted_repository(isos, dom0, tmp_path):
    tree = str(tmp_path / "tree")
    shutil.copytree(isos["signed"], tree)
    repomd = os.path.join(tree, "repodata", "repomd.xml")
    with open(repomd) as handle:
        data = handle.read()
    with open(repomd, "w") as handle:
        handle.write(data.replace("<revision>", "<revision>1", 1))
    config = str(tmp_path / "dnf.conf")
    _dnf_config(config, tree, tmp_path / "cache")
    result = _dnf(dom0, config, "install", "@update")
    assert result.returncode != 0
    assert "vif-rules-%s-1" % VERSION not in dom0.root.installed()
