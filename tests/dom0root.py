"""Sandbox dom0 roots for the real rpm (rpm --root, scriptlets chrooted).

A root holds what a XenServer dom0 of one version has where the product
looks: the inventory, the network backend, the vif script at its real path,
/usr/bin/python and/or python3, the init system (chkconfig and service, or
systemctl: stand-ins that record their calls, since no init runs here) and
xe. Its shell and tools are busybox (static); its python is a real
interpreter from /root/.pyenv, bind-mounted at the same path inside the
root, with the real XenAPI SDK of PyPI (2.14 for Python 2, the current one for
Python 3) and the XAPI stand-in's XenAPIPlugin in its site-packages; its netfilter
tools are the machine's real ones, run inside a network namespace of the
test. Every command runs in a mount namespace of its own (unshare -m), so
no bind mount outlives it, failure or not.
"""

import glob
import os
import shutil
import stat
import subprocess
import sys
import uuid
import zipfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYENV = "/root/.pyenv/versions"
PYTHONS = {"2.7": PYENV + "/2.7.18", "3.6": PYENV + "/3.6.15"}
# The XenAPI SDK for Python 2 dom0s: PyPI's last release that runs there (2.14,
# with six), pip-downloaded once; Python 3 gets the venv's current one.
SDK_DIR = os.path.join(TOP, ".venv", "dom0-sdk")
SDK_WHEELS = ("XenAPI==2.14", "six==1.16.0")
FIXTURES = os.path.join(TOP, "tests", "fixtures", "vif")
STANDIN_LOG = "/var/log/dom0-standin.calls"
VERSION = [l.split('"')[1] for l in open(os.path.join(TOP, "xapi-plugin", "vifrules",
                                                      "__init__.py")) if l.startswith("VERSION")][0]

# The netbed's choice of real tools: this kernel has no legacy ebtables.
NETFILTER_CONFIG = {"IPTABLES": "iptables-legacy", "IP6TABLES": "ip6tables-legacy",
                    "EBTABLES": "ebtables-nft", "ARPTABLES": "arptables-legacy"}
NETFILTER_TOOLS = ("xtables-legacy-multi", "xtables-nft-multi", "arptables-legacy")
NETFILTER_LINKS = {
    "xtables-legacy-multi": ["iptables-legacy", "iptables-legacy-restore", "iptables-legacy-save",
                             "ip6tables-legacy", "ip6tables-legacy-restore",
                             "ip6tables-legacy-save"],
    "xtables-nft-multi": ["ebtables-nft", "ebtables-nft-restore", "ebtables-nft-save"],
}


class Profile(object):
    def __init__(self, name, product_version, build, init, script, generation, pythons,
                 own_userspace):
        self.name = name
        self.product_version = product_version
        self.build = build
        self.init = init                    # "sysv" or "systemd"
        self.script = script                # the vif script's path on that version
        self.generation = generation        # its generation in patches/README.md
        self.pythons = pythons              # {"/usr/bin/python": "2.7", ...}
        self.own_userspace = own_userspace  # ebtables/arptables from the pack (32-bit)

    def expected_python(self):
        """What the scriptlets must pick: python2, python, python3, first present
        (every root's pythons have the XenAPI SDK)."""
        for path in ("/usr/bin/python2", "/usr/bin/python", "/usr/bin/python3"):
            if path in self.pythons:
                return path
        return None


PROFILES = dict((p.name, p) for p in [
    Profile("5.6-fp1", "5.6.100", "39265p", "sysv", "/etc/xensource/scripts/vif", "C",
            {"/usr/bin/python": "2.7"}, True),
    Profile("6.2", "6.2.0", "70446c", "sysv", "/etc/xensource/scripts/vif", "E",
            {"/usr/bin/python": "2.7"}, True),
    Profile("7.6", "7.6.0", "133c", "systemd", "/usr/libexec/xenopsd/vif-real", "F-7.6",
            {"/usr/bin/python": "2.7", "/usr/bin/python2": "2.7"}, False),
    Profile("8.3", "8.3.0", "cloud", "systemd", "/usr/libexec/xenopsd/vif-real", "F-7.6",
            {"/usr/bin/python": "2.7", "/usr/bin/python2": "2.7", "/usr/bin/python3": "3.6"},
            False),
    Profile("8.3-python3-only", "8.3.0", "cloud", "systemd", "/usr/libexec/xenopsd/vif-real",
            "F-7.6", {"/usr/bin/python3": "3.6"}, False),
])


def unavailable():
    """None if sandbox roots can be built here, else why not."""
    if os.geteuid() != 0:
        return "needs root (rpm --root, chroot, mount namespaces)"
    for tool in ("rpm", "rpmbuild", "unshare", "ip"):
        if shutil.which(tool) is None:
            return "%s is not installed (./build.sh test installs it)" % tool
    if not os.path.exists("/usr/bin/busybox") or "statically" not in subprocess.run(
            ["file", "/usr/bin/busybox"], capture_output=True, text=True).stdout:
        return "no static busybox (apt-get install busybox-static; ./build.sh test does)"
    for version, prefix in PYTHONS.items():
        if not os.path.exists(os.path.join(prefix, "bin", "python" + version)):
            return "Python %s is not at %s" % (version, prefix)
    return None


def fixture_for(generation):
    """The other engineer's fixture of this vif script generation, or None."""
    for name in ("vif-%s" % generation, "vif-real-%s" % generation):
        path = os.path.join(FIXTURES, name)
        if os.path.isfile(path):
            return path
    return None


def vif_patch_in_tree():
    return os.path.exists(os.path.join(TOP, "patches", "vif-patch"))


def sdk_wheels():
    """The XenAPI SDK wheels for dom0 pythons (downloaded once with pip)."""
    if not glob.glob(os.path.join(SDK_DIR, "XenAPI-*.whl")):
        os.makedirs(SDK_DIR, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "-d", SDK_DIR] + list(SDK_WHEELS), check=True, timeout=300)
    return sorted(glob.glob(os.path.join(SDK_DIR, "*.whl")))


def _libraries(paths):
    """Every shared library (and the loader) these ELF files load."""
    found = set()
    for path in paths:
        out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
        for line in out.splitlines():
            words = line.split()
            for word in words:
                if word.startswith("/") and os.path.exists(word):
                    found.add(word)
    return sorted(found)


class Dom0Root(object):
    def __init__(self, path, profile, netns=None):
        self.path = str(path)
        self.profile = profile
        self.netns = netns
        self.host_uuid = str(uuid.uuid4())

    def p(self, inside):
        return os.path.join(self.path, inside.lstrip("/"))

    def write(self, inside, text, mode=0o644):
        path = self.p(inside)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, mode)

    def read(self, inside):
        with open(self.p(inside)) as handle:
            return handle.read()

    # ------------------------------------------------------------ building

    def create(self, base, config=None):
        """Lay out the root from base (a prepare_base() directory), then this version."""
        subprocess.run(["cp", "-a", base + "/.", self.path], check=True)
        self._pythons()
        self._standins()
        profile = self.profile
        self.write("/etc/xensource-inventory",
                   "PRODUCT_BRAND='XenServer'\nPRODUCT_VERSION='%s'\nBUILD_NUMBER='%s'\n"
                   "INSTALLATION_UUID='%s'\n" % (profile.product_version, profile.build,
                                                 self.host_uuid))
        self.write("/etc/xensource/network.conf", "bridge\n")
        self.vif_script_bytes = self._vif_script()
        if config is not None:
            self.write_config(config)
        subprocess.run(["rpm", "--root", self.path, "--initdb"], check=True)
        return self

    def write_config(self, values):
        """The operator's /etc/sysconfig/vif-rules (before the install, it is
        what rpm keeps: the package's copy lands as .rpmnew)."""
        lines = ["# written by the operator"]
        for key in sorted(values):
            lines.append('%s="%s"' % (key, values[key]))
        self.write("/etc/sysconfig/vif-rules", "\n".join(lines) + "\n")

    def _prepare(self):
        for d in ("usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "etc/xensource",
                  "var/lib/rpm", "var/log", "var/lib/xcp", "var/lock", "run", "tmp", "proc",
                  "sys", "dev", "root", "opt/xensource/bin"):
            os.makedirs(self.p(d), exist_ok=True)
        os.chmod(self.p("tmp"), 0o1777)
        for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                             ("lib64", "usr/lib64"), ("var/run", "../run")):
            os.symlink(target, self.p(link))
        for name, minor in (("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)):
            os.mknod(self.p("dev/" + name), stat.S_IFCHR | 0o666, os.makedev(1, minor))
        self._busybox()
        self._netfilter()
        binaries = []
        for version, prefix in PYTHONS.items():
            os.makedirs(self.p(prefix), exist_ok=True)
            binaries.append("%s/bin/python%s" % (prefix, version))
            binaries.extend(glob.glob("%s/lib/python%s/lib-dynload/*.so" % (prefix, version)))
            site = self.p("/opt/site-" + version)
            os.makedirs(site)
            if version.startswith("2."):
                for wheel in sdk_wheels():
                    zipfile.ZipFile(wheel).extractall(site)
            else:   # the SDK of the tests' venv (requirements-test.txt): Python 3.6 on
                import XenAPI
                shutil.copytree(os.path.dirname(XenAPI.__file__), os.path.join(site, "XenAPI"),
                                ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy2(os.path.join(TOP, "tests", "xapi_standin", "XenAPIPlugin.py"), site)
        self._copy_libraries(binaries)

    def _busybox(self):
        shutil.copy2("/usr/bin/busybox", self.p("/usr/bin/busybox"))
        applets = subprocess.run(["/usr/bin/busybox", "--list"], capture_output=True,
                                 text=True, check=True).stdout.split()
        for applet in applets:
            if applet in ("busybox", "ip", "chroot"):
                continue
            os.symlink("busybox", self.p("/usr/bin/" + applet))

    def _copy_libraries(self, binaries):
        for library in _libraries(binaries):
            dest = self.p(library)
            if not library.startswith(PYENV) and not os.path.exists(dest):
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy2(os.path.realpath(library), dest)

    def _netfilter(self):
        binaries = []
        for tool in NETFILTER_TOOLS:
            source = shutil.which(tool) or os.path.join("/usr/sbin", tool)
            shutil.copy2(source, self.p("/usr/sbin/" + tool))
            binaries.append(source)
            for link in NETFILTER_LINKS.get(tool, []):
                os.symlink(tool, self.p("/usr/sbin/" + link))
        for name in ("/etc/ethertypes", "/etc/protocols", "/etc/services"):
            if os.path.exists(name):
                shutil.copy2(name, self.p(name))
        extensions = "/usr/lib/x86_64-linux-gnu/xtables"
        shutil.copytree(extensions, self.p(extensions))
        self._copy_libraries(binaries + glob.glob(extensions + "/*.so"))

    def _pythons(self):
        for link, version in self.profile.pythons.items():
            os.symlink("%s/bin/python%s" % (PYTHONS[version], version), self.p(link))

    def _standins(self):
        record = '#!/bin/sh\necho "${0##*/} $*" >> %s\n' % STANDIN_LOG
        tools = ["/opt/xensource/bin/xe", "/usr/bin/xe"]
        if self.profile.init == "sysv":
            tools += ["/sbin/chkconfig", "/sbin/service"]
        else:
            tools += ["/usr/bin/systemctl", "/sbin/service"]
        for tool in tools:
            self.write(tool, record, 0o755)

    def _vif_script(self):
        fixture = fixture_for(self.profile.generation)
        if fixture is None:
            data = ("#!/bin/sh\n# stand-in vif script: no fixture of generation %s yet\n"
                    % self.profile.generation).encode()
        else:
            with open(fixture, "rb") as handle:
                data = handle.read()
        path = self.p(self.profile.script)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
        os.chmod(path, 0o755)
        return data

    # ------------------------------------------------------------ running

    def _mounts(self):
        lines = ["mount -t proc proc %s" % self.p("/proc"),
                 "mount -t sysfs sysfs %s" % self.p("/sys")]
        for version in sorted(set(self.profile.pythons.values())):
            prefix = PYTHONS[version]
            inside = self.p(prefix)
            lines.append("mount --bind %s %s" % (prefix, inside))
            lines.append("mount -o remount,bind,ro %s" % inside)
            lines.append("mount --bind %s %s/lib/python%s/site-packages" % (
                self.p("/opt/site-" + version), inside, version))
        return "; ".join(lines)

    def run(self, argv, check=True, timeout=300, env=None):
        """argv on the machine, with this root's mounts, in its network namespace."""
        script = "set -e; %s; exec \"$@\"" % self._mounts()
        full = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"] + list(argv)
        if self.netns:
            full = ["ip", "netns", "exec", self.netns] + full
        result = subprocess.run(full, capture_output=True, text=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise AssertionError("%s failed (%d):\n%s\n%s" % (
                " ".join(argv), result.returncode, result.stdout, result.stderr))
        return result

    def rpm(self, *args, check=True):
        return self.run(["rpm", "--root", self.path] + list(args), check=check)

    def chroot(self, argv, check=True):
        """argv inside the root, as a scriptlet runs (PATH of rpm's scriptlets)."""
        env = {"PATH": "/sbin:/bin:/usr/sbin:/usr/bin", "HOME": "/root", "LANG": "C"}
        return self.run(["chroot", self.path] + list(argv), check=check, env=env)

    def installed(self):
        out = self.rpm("-qa", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}\n").stdout
        return sorted(out.split())

    def standin_calls(self):
        if not os.path.exists(self.p(STANDIN_LOG)):
            return []
        return self.read(STANDIN_LOG).splitlines()


def prepare_base(path):
    """What every root shares (busybox, the real netfilter tools, both
    pythons' libraries and site-packages), built once and copied per root."""
    Dom0Root(path, None)._prepare()
    return str(path)


def build_product(outdir, release):
    """The product RPM of this checkout at release `release` (pack/build-pack.sh)."""
    env = dict(os.environ, PACK_BUILD=str(release))
    result = subprocess.run([os.path.join(TOP, "pack", "build-pack.sh"), str(outdir)],
                            capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        raise AssertionError("build-pack.sh failed: " + result.stderr[-3000:])
    version = VERSION
    return os.path.join(str(outdir), "vif-rules-%s-%s.noarch.rpm" % (version, release))


def build_fake_providers(outdir, names=("iptables", "ebtables", "arptables", "bash")):
    """Empty noarch RPMs named like the host packages the product requires
    (what a dom0's rpmdb has; the files are not needed, the real tools are in
    the root). bash provides /bin/sh, which rpm requires for scriptlets."""
    work = os.path.join(str(outdir), "fake-build")
    os.makedirs(os.path.join(work, "SPECS"), exist_ok=True)
    paths = {}
    for name in names:
        spec = os.path.join(work, "SPECS", name + ".spec")
        with open(spec, "w") as handle:
            handle.write("Name: %s\nVersion: 1.4.21\nRelease: 0.fake\nSummary: stand-in for "
                         "the host's %s package\nLicense: GPLv2\nBuildArch: noarch\n"
                         "%s%%description\nrpmdb entry only.\n%%files\n" % (
                             name, name, name == "bash" and "Provides: /bin/sh\n" or ""))
        subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", "_topdir " + work, spec],
                       check=True, capture_output=True)
        paths[name] = os.path.join(work, "RPMS", "noarch", "%s-1.4.21-0.fake.noarch.rpm" % name)
    return paths
