"""Userspace RPMs for a 32-bit (CentOS 5) dom0: ebtables and arptables.

Builds the RPMs once per session with rpm/build-userspace.sh, then checks:
- the binaries are static 32-bit x86 ELF (no interpreter, no NEEDED, no glibc
  symbol versions, no ABI note asking for a kernel newer than 2.6.18);
- the RPM metadata (arch, payload, digests, rpmlib needs, arptables_jf handling)
  is what rpm 4.4 on CentOS 5 can install and upgrade;
- the packages install into a scratch root, and replace a fake arptables_jf;
- the built 32-bit arptables programs the kernel's arptables FORWARD chain in a
  throwaway network namespace, where real ARP frames sent through a bridge are
  then dropped by the rule and pass without it.

Only documentation addresses (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) are
used; the root namespace's firewall is never touched.
"""

import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(TOP, "rpm", "build-userspace.sh")

EBT_RPM = "ebtables-2.0.11-1.vifrules.i686.rpm"
ARPT_RPM = "arptables-0.0.5-1.vifrules.i686.rpm"

# rpmlib() features rpm 4.4.2 (CentOS 5) knows; anything else makes it refuse.
RPM44_RPMLIB = set([
    "CompressedFileNames", "PayloadFilesHavePrefix", "VersionedDependencies",
    "PartialHardlinkSets", "ExplicitPackageProvide", "HeaderLoadSortsTags",
    "ScriptletInterpreterArgs", "PayloadIsBzip2",
])

IS_ROOT = os.geteuid() == 0


def run(cmd, check=True, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("universal_newlines", True)
    kw.setdefault("timeout", 120)
    p = subprocess.run(cmd, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%r failed (%d):\nstdout: %s\nstderr: %s"
                             % (cmd, p.returncode, p.stdout, p.stderr))
    return p


def rpmq(path, fmt):
    return run(["rpm", "-qp", "--nosignature", "--qf", fmt, path]).stdout


# --------------------------------------------------------------------------- build

@pytest.fixture(scope="session")
def userspace_out(tmp_path_factory):
    if not IS_ROOT and shutil.which("i386-linux-musl-gcc") is None:
        pytest.skip("needs root to install the i386 musl toolchain via apt")
    out = str(tmp_path_factory.mktemp("userspace-out"))
    p = run([BUILD, out], check=False, timeout=1800)
    assert p.returncode == 0, "build-userspace.sh failed:\n%s\n%s" % (p.stdout, p.stderr[-4000:])
    for r in (EBT_RPM, ARPT_RPM):
        assert os.path.isfile(os.path.join(out, r)), "%s not produced; have %s" % (r, os.listdir(out))
    return out


@pytest.fixture(scope="session")
def installed_root(userspace_out, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("rpmroot"))
    run(["rpm", "--root", root, "--dbpath", "/var/lib/rpm", "--initdb"])
    run(["rpm", "--root", root, "--dbpath", "/var/lib/rpm", "-i", "--nodeps",
         "--ignorearch", "--noscripts",
         os.path.join(userspace_out, EBT_RPM), os.path.join(userspace_out, ARPT_RPM)])
    return root


def test_second_build_is_a_noop(userspace_out):
    before = dict((f, os.stat(os.path.join(userspace_out, f)).st_mtime)
                  for f in (EBT_RPM, ARPT_RPM))
    t0 = time.time()
    p = run([BUILD, userspace_out], timeout=600)
    assert time.time() - t0 < 60, "second run rebuilt: %s" % p.stderr
    assert "up to date" in p.stderr
    for f, m in before.items():
        assert os.stat(os.path.join(userspace_out, f)).st_mtime == m


def test_sources_pinned_and_verified():
    pins = {}
    with open(os.path.join(TOP, "rpm", "sources.sha256")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                digest, name = line.split()
                assert re.match(r"^[0-9a-f]{64}$", digest)
                pins[name] = digest
    assert set(pins) == set(["ebtables_2.0.11.orig.tar.gz", "arptables_0.0.5.orig.tar.gz"])
    for spec, tarball in (("ebtables.spec", "ebtables_%{version}.orig.tar.gz"),
                          ("arptables.spec", "arptables_%{version}.orig.tar.gz")):
        with open(os.path.join(TOP, "rpm", spec)) as f:
            assert re.search(r"^Source0:\s+%s$" % re.escape(tarball), f.read(), re.M)


def test_bad_checksum_is_refused(userspace_out, tmp_path):
    """A tarball that does not match the pin must not be built (nor silently replaced
    by a download in this test: VIF_RULES_SOURCES points at a private copy)."""
    if not IS_ROOT:
        pytest.skip("refetching from Debian's source archive needs root (apt)")
    srcdir = tmp_path / "sources"
    srcdir.mkdir()
    good = os.environ.get("VIF_RULES_SOURCES") or os.path.join(TOP, "sources")
    for name in ("ebtables_2.0.11.orig.tar.gz", "arptables_0.0.5.orig.tar.gz"):
        shutil.copy(os.path.join(good, name), str(srcdir / name))
    with open(str(srcdir / "arptables_0.0.5.orig.tar.gz"), "ab") as f:
        f.write(b"tampered")
    # Refetching from Debian gives the genuine file back: the build then succeeds
    # with the genuine tarball, and the tampered one is gone.
    out = tmp_path / "out"
    p = run([BUILD, str(out)], check=False, timeout=1200,
            env=dict(os.environ, VIF_RULES_SOURCES=str(srcdir)))
    assert "wrong sha256" in p.stderr
    if p.returncode == 0:
        digest = run(["sha256sum", str(srcdir / "arptables_0.0.5.orig.tar.gz")]).stdout.split()[0]
        assert digest == "4f9a0656ce5c90868f551cd4deeb2d04f33899667e1fb2818b64e432fe8f629c"
    else:
        assert "sha256" in p.stderr or "apt-get source" in p.stderr


# --------------------------------------------------------------------------- ELF

def elf_files(root):
    return [os.path.join(root, "sbin", n)
            for n in ("ebtables", "ebtables-restore", "arptables")]


def test_binaries_are_static_i386(installed_root):
    for path in elf_files(installed_root):
        assert os.path.isfile(path), path
        desc = run(["file", "-b", path]).stdout
        assert "ELF 32-bit LSB executable" in desc, desc
        assert "Intel 80386" in desc or "Intel i386" in desc, desc
        assert "statically linked" in desc, desc
        with open(path, "rb") as f:
            ident = f.read(20)
        assert ident[:4] == b"\x7fELF" and ident[4] == 1  # ELFCLASS32
        assert struct.unpack("<H", ident[18:20])[0] == 3  # EM_386
        phdrs = run(["readelf", "-lW", path]).stdout
        assert "INTERP" not in phdrs, "has a program interpreter:\n" + phdrs
        assert "DYNAMIC" not in phdrs, phdrs
        dyn = run(["readelf", "-dW", path]).stdout
        assert "NEEDED" not in dyn, dyn
        vers = run(["readelf", "-VW", path]).stdout
        assert "GLIBC_" not in vers, vers
        syms = run(["readelf", "--dyn-syms", "-W", path]).stdout
        assert not re.search(r"@GLIBC_", syms), syms


def test_no_abi_note_newer_than_2_6_18(installed_root):
    """glibc puts the minimum kernel in .note.ABI-tag (3.2.0 for modern glibc)."""
    for path in elf_files(installed_root):
        notes = run(["readelf", "-nW", path]).stdout
        m = re.search(r"OS: Linux, ABI: (\d+)\.(\d+)\.(\d+)", notes)
        if m:
            assert tuple(int(x) for x in m.groups()) <= (2, 6, 18), notes


def test_binaries_run_here(installed_root):
    p = run([os.path.join(installed_root, "sbin", "arptables"), "-V"])
    assert "arptables v0.0.5" in p.stdout + p.stderr
    p = run([os.path.join(installed_root, "sbin", "ebtables"), "-V"])
    assert "ebtables v2.0.11" in p.stdout + p.stderr
    p = run([os.path.join(installed_root, "sbin", "ebtables-restore"), "--bogus"], check=False)
    assert p.returncode > 0 and "--noflush" in p.stderr, p.stderr


def test_binaries_run_with_2_6_18_syscalls_only(installed_root):
    """With every post-2.6.18 i386 syscall failing, the tools still work."""
    p = run(old_kernel([os.path.join(installed_root, "sbin", "arptables"), "-V"]), check=False)
    assert p.returncode == 0 and "arptables v0.0.5" in p.stdout + p.stderr, p
    p = run(old_kernel([os.path.join(installed_root, "sbin", "ebtables"), "-V"]), check=False)
    assert p.returncode == 0 and "ebtables v2.0.11" in p.stdout + p.stderr, p


def test_old_kernel_filter_bites(tmp_path):
    """The filter above is real: a 32-bit program's direct socket() syscall (359)
    fails with ENOSYS under it and works without it."""
    cc = shutil.which("i386-linux-musl-gcc")
    if cc is None:
        pytest.skip("i386-linux-musl-gcc not installed")
    src = tmp_path / "sc.c"
    src.write_text(textwrap.dedent("""\
        #include <errno.h>
        #include <stdio.h>
        #include <unistd.h>
        #include <sys/syscall.h>
        int main(void) {
            long r = syscall(359, 2, 2, 0);   /* i386 socket(AF_INET, SOCK_DGRAM) */
            printf("%ld %d\\n", r, r < 0 ? errno : 0);
            return 0;
        }
        """))
    exe = str(tmp_path / "sc")
    run([cc, "-static", "-o", exe, str(src)])
    r, err = run([exe]).stdout.split()
    assert int(r) >= 0, "direct socket syscall failed here without the filter"
    r, err = run(old_kernel([exe])).stdout.split()
    assert int(r) == -1 and int(err) == 38, (r, err)


# --------------------------------------------------------------------------- RPM metadata

def test_rpm_metadata(userspace_out):
    for rpmfile, name, ver in ((EBT_RPM, "ebtables", "2.0.11"), (ARPT_RPM, "arptables", "0.0.5")):
        path = os.path.join(userspace_out, rpmfile)
        got = rpmq(path, "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{OS}|%{PAYLOADCOMPRESSOR}|"
                         "%{PAYLOADFORMAT}|%{FILEDIGESTALGO}|%{EPOCH}")
        n, v, r, arch, os_, comp, fmt, algo, epoch = got.split("|")
        assert (n, v, arch, os_) == (name, ver, "i686", "linux")
        assert re.match(r"^\d+\.vifrules$", r), r
        assert comp == "gzip" and fmt == "cpio", got
        assert algo in ("(none)", "1"), "file digests must be MD5 for rpm 4.4: " + got
        assert epoch == "(none)", got
        digests = rpmq(path, "[%{FILEDIGESTS}\n]").split()
        assert digests and all(re.match(r"^[0-9a-f]{32}$", d) for d in digests if d), digests
        reqs = rpmq(path, "[%{REQUIRENAME}\n]").split()
        for req in reqs:
            m = re.match(r"^rpmlib\((\w+)\)$", req)
            assert m, "unexpected dependency %s: the dom0 may not satisfy it" % req
            assert m.group(1) in RPM44_RPMLIB, "rpm 4.4 does not know rpmlib(%s)" % m.group(1)
        files = rpmq(path, "[%{FILENAMES}\n]").split()
        assert not [f for f in files if "/.build-id" in f], files
        # magic of the lead: rpm v3 lead, readable by old rpm
        with open(path, "rb") as f:
            assert f.read(6) == b"\xed\xab\xee\xdb\x03\x00"


def test_arptables_replaces_arptables_jf(userspace_out):
    path = os.path.join(userspace_out, ARPT_RPM)
    prov = rpmq(path, "[%{PROVIDENAME} %{PROVIDEFLAGS:depflags} %{PROVIDEVERSION}\n]")
    obs = rpmq(path, "[%{OBSOLETENAME} %{OBSOLETEFLAGS:depflags} %{OBSOLETEVERSION}\n]")
    conf = rpmq(path, "[%{CONFLICTNAME} %{CONFLICTFLAGS:depflags} %{CONFLICTVERSION}\n]")
    assert re.search(r"^arptables_jf = \S+$", prov, re.M), prov
    assert re.search(r"^arptables_jf < \S+$", obs, re.M), obs
    assert re.search(r"^arptables_jf < \S+$", conf, re.M), conf
    provided = re.search(r"^arptables_jf = (\S+)$", prov, re.M).group(1)
    bound = re.search(r"^arptables_jf < (\S+)$", obs, re.M).group(1)
    # Our own Provides must not fall under our Obsoletes/Conflicts (self-obsolete
    # loops in yum), and CentOS 5's arptables_jf-0.0.8-* must.
    assert rpmvercmp(provided, bound) >= 0
    assert rpmvercmp("0.0.8-8", bound) < 0
    files = rpmq(path, "[%{FILENAMES}\n]").split()
    assert set(["/sbin/arptables", "/sbin/arptables-save", "/sbin/arptables-restore"]) <= set(files)


def rpmvercmp(a, b):
    code = "import rpm,sys; sys.stdout.write(str(rpm.labelCompare(('0',)+tuple(sys.argv[1].split('-',1)+[''])[:2], ('0',)+tuple(sys.argv[2].split('-',1)+[''])[:2])))"
    p = subprocess.run(["python3", "-c", code, a, b], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True)
    if p.returncode == 0:
        return int(p.stdout)
    # python3-rpm missing: compare with `rpm --eval %{lua:...}` (rpm.vercmp, rpm >= 4.7)
    out = run(["rpm", "--eval", "%%{lua: print(rpm.vercmp('%s', '%s'))}" % (a, b)]).stdout.strip()
    return int(out)


def test_installed_files(installed_root):
    for rel, mode in (("sbin/ebtables", 0o755), ("sbin/ebtables-restore", 0o755),
                      ("sbin/ebtables-save", 0o755), ("sbin/arptables", 0o755),
                      ("sbin/arptables-save", 0o755), ("sbin/arptables-restore", 0o755),
                      ("etc/ethertypes", 0o644)):
        path = os.path.join(installed_root, rel)
        assert os.path.isfile(path), rel
        assert os.stat(path).st_mode & 0o777 == mode, rel
    with open(os.path.join(installed_root, "etc", "ethertypes")) as f:
        text = f.read()
    assert re.search(r"^IPv4\s+0800", text, re.M) and re.search(r"^ARP\s+0806", text, re.M)
    assert re.search(r"^IPv6\s+86DD", text, re.M | re.I)
    for script, tool in (("arptables-save", "/sbin/arptables"), ("arptables-restore", "/sbin/arptables"),
                         ("ebtables-save", "/sbin/ebtables")):
        path = os.path.join(installed_root, "sbin", script)
        with open(path) as f:
            text = f.read()
        assert text.startswith("#!/usr/bin/perl")
        assert '"%s"' % tool in text, script
        assert "__EXEC_PATH__" not in text and "@sbindir@" not in text
        if shutil.which("perl"):
            run(["perl", "-c", path])
    q = run(["rpm", "--root", installed_root, "--dbpath", "/var/lib/rpm", "-qa",
             "--qf", "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\n"]).stdout.split()
    assert sorted(q) == sorted([EBT_RPM[:-4], ARPT_RPM[:-4]])


FAKE_SPEC = textwrap.dedent("""\
    %%define _binary_payload w9.gzdio
    %%define _build_id_links none
    %%define debug_package %%{nil}
    Name: %(name)s
    Version: %(version)s
    Release: %(release)s
    Summary: fake %(name)s as a CentOS 5 dom0 may have it
    License: GPL
    Group: System Environment/Base
    AutoReqProv: no
    %%description
    fake
    %%install
    mkdir -p %%{buildroot}/sbin
    for f in %(files)s; do echo fake > %%{buildroot}/sbin/$f; chmod 755 %%{buildroot}/sbin/$f; done
    %%files
    %%defattr(-,root,root,-)
    %(filelist)s
    """)


def build_fake_rpm(topdir, name, version, release, files):
    spec = os.path.join(topdir, name + ".spec")
    with open(spec, "w") as f:
        f.write(FAKE_SPEC % dict(name=name, version=version, release=release,
                                 files=" ".join(files),
                                 filelist="\n".join("/sbin/" + x for x in files)))
    run(["rpmbuild", "-bb", "--nodeps", "--target", "i386", "--define", "_topdir " + topdir, spec])
    out = [os.path.join(dp, fn) for dp, _, fns in os.walk(os.path.join(topdir, "RPMS"))
           for fn in fns if fn.startswith(name + "-")]
    assert len(out) == 1, out
    return out[0]


def test_upgrade_over_centos_packages(userspace_out, tmp_path):
    """rpm -Uvh (no --nodeps, no --force) replaces CentOS' arptables_jf and an older
    ebtables build, and a later release of ours upgrades cleanly.  (rpm 4.18 here;
    the same header semantics hold for 4.4.)"""
    root = str(tmp_path / "root")
    top = str(tmp_path / "top")
    os.makedirs(root)
    os.makedirs(top)
    jf = build_fake_rpm(top, "arptables_jf", "0.0.8", "8",
                        ["arptables", "arptables-save", "arptables-restore"])
    oldebt = build_fake_rpm(top, "ebtables", "2.0.9", "1.el5.1.xs", ["ebtables"])
    db = ["rpm", "--root", root, "--dbpath", "/var/lib/rpm"]
    run(db + ["--initdb"])
    run(db + ["-i", "--ignorearch", "--noscripts", jf, oldebt])
    p = run(db + ["-Uvh", "--ignorearch", "--noscripts",
                  os.path.join(userspace_out, ARPT_RPM), os.path.join(userspace_out, EBT_RPM)],
            check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    names = sorted(run(db + ["-qa", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}\n"]).stdout.split())
    assert names == ["arptables-0.0.5-1.vifrules", "ebtables-2.0.11-1.vifrules"], names
    with open(os.path.join(root, "sbin", "arptables"), "rb") as f:
        assert f.read(4) == b"\x7fELF"
    # Installing arptables_jf on top again must be refused (Conflicts/Obsoletes).
    p = run(db + ["-i", "--ignorearch", "--noscripts", jf], check=False)
    assert p.returncode != 0


# --------------------------------------------------------------------------- netns ARP test

RECEIVER = textwrap.dedent("""\
    import json, select, socket, struct, sys, time
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    s.bind((sys.argv[1], 0))
    counts = {}
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    deadline = time.time() + float(sys.argv[2])
    while time.time() < deadline:
        r, _, _ = select.select([s, sys.stdin], [], [], 0.2)
        if s in r:
            frame = s.recv(2048)
            if len(frame) >= 42 and frame[12:14] == b"\\x08\\x06":
                spa = socket.inet_ntoa(frame[28:32])
                counts[spa] = counts.get(spa, 0) + 1
        if sys.stdin in r and not sys.stdin.readline():
            break
    sys.stdout.write(json.dumps(counts) + "\\n")
    """)

SENDER = textwrap.dedent("""\
    import sys
    from scapy.all import ARP, Ether, sendp
    iface, mac, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    frames = []
    for psrc in sys.argv[4:]:
        frames += [Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") /
                   ARP(op=1, hwsrc=mac, psrc=psrc, pdst="192.0.2.1")] * count
    sendp(frames, iface=iface, verbose=False)
    """)


# Runs a command with the i386 system call table of Linux 2.6.18: every i386
# syscall numbered 318 (getcpu, 2.6.19) or higher fails with ENOSYS, as it would
# on a 5.5/5.6 dom0 kernel (e.g. musl's direct socket calls, 359+, since 4.3, must
# fall back to socketcall).  x86_64 calls (this wrapper, up to execve) pass.
# Flag semantics of old kernels (O_CLOEXEC ignored etc.) are not emulated.
OLD_KERNEL = textwrap.dedent("""\
    import ctypes, os, struct, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:          # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl")
    def op(code, k, jt=0, jf=0):
        return struct.pack("HBBI", code, jt, jf, k)
    prog = (op(0x20, 4) +                        # ld [arch]
            op(0x15, 0x40000003, 0, 2) +         # jeq AUDIT_ARCH_I386 ? next : allow
            op(0x20, 0) +                        # ld [nr]
            op(0x35, 318, 1, 0) +                # jge 318 ? enosys : allow
            op(0x06, 0x7fff0000) +               # ret ALLOW
            op(0x06, 0x00050000 | 38))           # ret ERRNO(ENOSYS)
    buf = ctypes.create_string_buffer(prog)
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fp = Fprog(len(prog) // 8, ctypes.addressof(buf))
    if libc.syscall(317, 1, 0, ctypes.byref(fp)) != 0:   # seccomp(SET_MODE_FILTER)
        raise OSError(ctypes.get_errno(), "seccomp")
    os.execv(sys.argv[1], sys.argv[1:])
    """)


def old_kernel(cmd):
    if os.uname()[4] != "x86_64":
        pytest.skip("the 2.6.18 syscall-table filter is written for an x86_64 host")
    return [sys.executable, "-c", OLD_KERNEL] + list(cmd)


class Netns(object):
    """Bridge namespace with two ports; guest namespaces behind each port."""

    def __init__(self):
        tag = "vrtest-%d-%s" % (os.getpid(), uuid.uuid4().hex[:6])
        self.br = tag + "-br"
        self.g1 = tag + "-g1"
        self.g2 = tag + "-g2"
        self.created = []

    def ip(self, *args):
        return run(["ip"] + list(args))

    def ns(self, name, *cmd, **kw):
        return run(["ip", "netns", "exec", name] + list(cmd), **kw)

    def setup(self):
        for n in (self.br, self.g1, self.g2):
            self.ip("netns", "add", n)
            self.created.append(n)
        self.ns(self.br, "ip", "link", "add", "br0", "type", "bridge",
                "forward_delay", "0", "stp_state", "0")
        for port, guest, mac in (("vif1.0", self.g1, "02:00:00:00:01:01"),
                                 ("vif2.0", self.g2, "02:00:00:00:02:01")):
            self.ns(self.br, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0",
                    "netns", guest)
            self.ns(self.br, "ip", "link", "set", port, "master", "br0", "up")
            self.ns(guest, "ip", "link", "set", "eth0", "address", mac, "up")
            self.ns(guest, "ip", "link", "set", "lo", "up")
        self.ns(self.br, "ip", "link", "set", "br0", "up")

    def teardown(self):
        for n in self.created:
            subprocess.run(["ip", "netns", "del", n], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)


@pytest.fixture
def netns():
    if not IS_ROOT:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 missing")
    n = Netns()
    try:
        n.setup()
        # br_netfilter: per-namespace sysctl (built in, or a module).
        knob = "/proc/sys/net/bridge/bridge-nf-call-arptables"
        if n.ns(n.br, "test", "-e", knob, check=False).returncode != 0:
            subprocess.run(["modprobe", "br_netfilter"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        if n.ns(n.br, "test", "-e", knob, check=False).returncode != 0:
            pytest.skip("kernel has no br_netfilter (no %s)" % knob)
        n.ns(n.br, "sh", "-c", "echo 1 > " + knob)
        assert n.ns(n.br, "cat", knob).stdout.strip() == "1"
        yield n
    finally:
        n.teardown()
        left = run(["ip", "netns", "list"]).stdout
        assert n.br not in left and n.g1 not in left and n.g2 not in left


def arp_round(n, count, psrcs, sender=None, receiver=None, mac="02:00:00:00:01:01"):
    """Send `count` ARP requests per sender IP from one guest (default guest 1);
    return {sender IP: frames seen} at the other (default guest 2)."""
    sender = sender or n.g1
    receiver = receiver or n.g2
    rx = subprocess.Popen(["ip", "netns", "exec", receiver, sys.executable, "-c", RECEIVER,
                           "eth0", "20"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    try:
        r, _, _ = select.select([rx.stdout], [], [], 15)
        assert r, "receiver did not start"
        assert rx.stdout.readline().strip() == "ready", rx.stderr.read()
        n.ns(sender, sys.executable, "-c", SENDER, "eth0", mac, str(count),
             *psrcs, timeout=60)
        time.sleep(0.5)
        out, err = rx.communicate(input="", timeout=30)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    assert rx.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def rule_packets(n, arptables):
    out = n.ns(n.br, arptables, "-L", "FORWARD", "-v", "-n").stdout
    m = re.findall(r"-s 192\.0\.2\.66.*pcnt=(\d+)", out)
    assert len(m) == 1, out
    return int(m[0])


def test_arptables_forward_rule_enforced_on_real_arp(installed_root, netns):
    pytest.importorskip("scapy")
    arpt = os.path.join(installed_root, "sbin", "arptables")
    spoof, legit = "192.0.2.66", "192.0.2.10"
    n = netns

    # Baseline: without a rule both pass.
    seen = arp_round(n, 5, [spoof, legit])
    assert seen.get(spoof) == 5 and seen.get(legit) == 5, seen

    # The 32-bit static arptables adds the FORWARD rule in the bridge namespace,
    # limited to the system calls of a 2.6.18 kernel.
    n.ns(n.br, *old_kernel([arpt, "-A", "FORWARD", "-i", "vif1.0", "-s", spoof, "-j", "DROP"]))
    listing = n.ns(n.br, arpt, "-L", "FORWARD", "-n").stdout
    assert "192.0.2.66" in listing and "DROP" in listing, listing
    assert rule_packets(n, arpt) == 0
    seen = arp_round(n, 5, [spoof, legit])
    assert seen.get(spoof, 0) == 0, seen
    assert seen.get(legit) == 5, seen
    assert rule_packets(n, arpt) == 5

    # The rule only matches its port: the same sender IP from guest 2 (vif2.0)
    # still reaches guest 1, and the rule's counter does not move.
    seen = arp_round(n, 3, [spoof], sender=n.g2, receiver=n.g1, mac="02:00:00:00:02:01")
    assert seen.get(spoof) == 3, seen
    assert rule_packets(n, arpt) == 5

    # Deleted again, the spoofed sender passes.
    n.ns(n.br, *old_kernel([arpt, "-D", "FORWARD", "-i", "vif1.0", "-s", spoof, "-j", "DROP"]))
    assert "192.0.2.66" not in n.ns(n.br, arpt, "-L", "FORWARD", "-n").stdout
    seen = arp_round(n, 5, [spoof])
    assert seen.get(spoof) == 5, seen


def test_ebtables_fails_cleanly_or_works(installed_root, netns):
    """This kernel may lack legacy ebtables: the binary must then fail with the
    'not supported' message, not crash; on a kernel with it, it must list."""
    ebt = os.path.join(installed_root, "sbin", "ebtables")
    p = netns.ns(netns.br, ebt, "-t", "filter", "-L", check=False)
    assert p.returncode >= 0, "killed by signal %d" % -p.returncode
    if p.returncode == 0:
        assert "Bridge table: filter" in p.stdout and "Bridge chain: FORWARD" in p.stdout
    else:
        assert p.returncode != 139
        assert "doesn't support the ebtables 'filter' table" in p.stderr + p.stdout, p.stderr
    p = netns.ns(netns.br, os.path.join(installed_root, "sbin", "ebtables-restore"), "--noflush",
                 input="*filter\n", check=False)
    assert p.returncode >= 0
    if p.returncode != 0:
        assert "doesn't support" in p.stderr + p.stdout, p.stderr
