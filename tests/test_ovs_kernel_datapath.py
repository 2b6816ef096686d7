"""The Open vSwitch attack suite on the kernel datapath, as a XenServer host
runs it: tests/test_ovs_attacks.py inside a VM.

This machine cannot load the openvswitch module, and the userspace datapath
of the other OVS tests reads each port before its tc ingress, where the
guest ports' device filter works (vifrules/devfilter.py). So
tests/kdp/build-kernel.sh builds Debian's linux-source-6.1 for x86_64 with
the kernel datapath and the filter's qdisc and classifier built in (cached by
content), and qemu boots it (emulated) with this machine's
root as its own, read-only over 9p, and a job directory of this test's.
tests/kdp/vm-init runs the module there with VIF_RULES_TEST_OVS_DATAPATH=
system: the same bed, daemons, frames and product, on the kernel datapath.
There the LLC/SNAP attack that the userspace bed lets through must be
dropped like every other."""

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KDP = os.path.join(TOP, "tests", "kdp")
TARBALL = "/usr/src/linux-source-6.1.tar.xz"
QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 2400  # seconds

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (kernel build cache, netns in the VM)"),
    pytest.mark.skipif(shutil.which(QEMU) is None,
                       reason="%s missing (apt-get install qemu-system-x86)" % QEMU),
    pytest.mark.skipif(not os.path.exists(TARBALL),
                       reason="%s missing (apt-get install linux-source-6.1)" % TARBALL),
]


def _kernel():
    build = subprocess.run([os.path.join(KDP, "build-kernel.sh")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=3000)
    assert build.returncode == 0, "kernel build failed:\n" + build.stderr[-4000:]
    return build.stdout.strip().splitlines()[-1]


def _boot(kernel_dir, job):
    # TCG, not KVM: under this machine's nested KVM the guest printed nothing
    # at all; the module runs in a few minutes emulated.
    argv = [QEMU, "-M", "q35", "-m", "2048", "-smp", "2", "-accel", "tcg"] + [
        "-nic", "none", "-display", "none", "-monitor", "none", "-serial", "stdio",
        "-no-reboot", "-device", "virtio-rng-pci",
        "-virtfs", "local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", "local,path=%s,mount_tag=job,security_model=none" % job,
        "-kernel", os.path.join(kernel_dir, "bzImage"),
        "-append", "console=ttyS0 panic=-1 root=root rootfstype=9p "
                   "rootflags=trans=virtio,version=9p2000.L,msize=262144,cache=loose ro "
                   "init=%s" % os.path.join(KDP, "vm-init")]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=BOOT_TIMEOUT)


def _outcomes(junit):
    """{test name: 'passed' | 'failed' | 'skipped' | 'xfailed'} from pytest's junit XML."""
    outcomes = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        kind = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                kind = "failed"
            elif child.tag == "skipped":
                kind = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
        outcomes[case.get("name")] = kind
    return outcomes


def test_the_ovs_suite_holds_on_the_kernel_datapath(tmp_path):
    kernel_dir = _kernel()
    job = tmp_path / "job"
    job.mkdir()
    (job / "top").write_text(TOP + "\n")
    junit = job / "junit.xml"
    (job / "run.sh").write_text(
        "cd %s\n"
        "export VIF_RULES_TEST_OVS_DATAPATH=system VIF_RULES_TEST_OBSERVE_SECONDS=8 "
        "PYTHONDONTWRITEBYTECODE=1 HOME=/tmp\n"
        "ovs-vswitchd --version | head -1\n"
        # the kernel datapath answers (the VM's own namespace, not this machine's)
        "ovs-dpctl add-dp kdp-probe && ovs-dpctl show kdp-probe && ovs-dpctl del-dp kdp-probe "
        "&& echo 'kernel datapath: ok'\n"
        "exec %s -m pytest -p no:cacheprovider -q -rs --junitxml=/mnt/junit.xml "
        "tests/test_ovs_attacks.py\n" % (TOP, sys.executable))
    vm = _boot(kernel_dir, str(job))
    console = vm.stdout.replace("\r", "")
    out = (job / "out.log").read_text() if (job / "out.log").exists() else "(no output)"
    assert (job / "rc").exists(), "the VM gave no status:\n%s\n%s" % (console[-4000:], out[-4000:])
    assert "kernel datapath: ok" in out, out[-4000:]
    outcomes = _outcomes(str(junit))
    assert len(outcomes) > 40, out[-4000:]
    failed = sorted(name for name, kind in outcomes.items() if kind != "passed")
    assert not failed, "not passed on the kernel datapath: %s\n%s" % (failed, out[-6000:])
    # the attack the userspace bed lets through is dropped on the kernel datapath
    assert outcomes.get("test_attack_blocked[llc-snap]") == "passed", outcomes
    assert re.search(r"\b%d passed\b" % len(outcomes), out), out[-2000:]
