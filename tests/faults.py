"""Fault injection for the convergence proofs (tests/test_faults.py).

ToolFaults puts a wrapper script in front of every netfilter tool the
product runs (through the configuration's *_RESTORE, *_SAVE and ARPTABLES
keys). A control file per tool says how the tool misbehaves: fail always,
fail on its Nth call (a counter file), print garbage and exit 0, or sleep
before exec'ing the real tool. Every call is logged, so a clean run tells
which steps an operation takes.

The rest: start a product command and SIGKILL its python (not the
`ip netns exec` in front of it, which execs python in place) at an offset,
wait for every orphan of a killed caller (they hold the lock), split a
bed's dump per family and table, and decide whether a dump gives a guest no
more access than the union of the versions it may legally be in.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import netbed

# The config key of each tool the product runs, and the real tool (legacy
# iptables backend, ebtables-nft, arptables-legacy: as netbed configures).
TOOLS = {
    "EBTABLES_RESTORE": "ebtables-nft-restore",
    "EBTABLES_SAVE": "ebtables-nft-save",
    "IPTABLES_RESTORE": "iptables-legacy-restore",
    "IPTABLES_SAVE": "iptables-legacy-save",
    "IP6TABLES_RESTORE": "ip6tables-legacy-restore",
    "IP6TABLES_SAVE": "ip6tables-legacy-save",
    "ARPTABLES": "arptables-legacy",
}
RESTORE_KEYS = ("EBTABLES_RESTORE", "IPTABLES_RESTORE", "IP6TABLES_RESTORE")
RUN_LIMIT = 20  # seconds: longer than any operation here may take
TIMED_OUT = -1000
GARBAGE = "Segmentation fault\n<html>not a dump</html>\n"

_WRAPPER = """#!/bin/sh
# fault wrapper for %(key)s: see tests/faults.py
d=%(dir)s
k=%(key)s
echo "$k" >> "$d/calls"
mode=$(cat "$d/$k.mode" 2>/dev/null)
case "$mode" in
nth:*)
    n=$(( $(cat "$d/$k.count" 2>/dev/null || echo 0) + 1 ))
    echo "$n" > "$d/$k.count"
    if [ "$n" = "${mode#nth:}" ]; then mode=fail; else mode=; fi ;;
esac
case "$mode" in
fail)
    cat > /dev/null
    echo "$k: injected failure" >&2
    exit 1 ;;
garbage)
    cat > /dev/null
    printf '%(garbage)s'
    exit 0 ;;
slow:*)
    touch "$d/$k.started"
    sleep "${mode#slow:}" ;;
esac
exec %(real)s "$@"
"""


class ToolFaults(object):
    """Wrappers for TOOLS in a directory of their own (a path the
    configuration accepts as a command: letters, digits and _./+- only)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="vrfaults", dir="/tmp")
        for key, tool in TOOLS.items():
            real = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
            assert real, "%s is not installed" % tool
            path = os.path.join(self.dir, key.lower())
            with open(path, "w") as handle:
                handle.write(_WRAPPER % {"key": key, "dir": self.dir, "real": real,
                                         "garbage": GARBAGE.replace("\n", "\\n")})
            os.chmod(path, 0o755)

    def config(self):
        """The configuration keys that put the wrappers in front."""
        return dict((key, os.path.join(self.dir, key.lower())) for key in TOOLS)

    def set(self, key, mode):
        """mode: 'fail', 'nth:N', 'garbage' or 'slow:SECONDS'."""
        for suffix in (".count", ".started"):
            _remove(os.path.join(self.dir, key + suffix))
        with open(os.path.join(self.dir, key + ".mode"), "w") as handle:
            handle.write(mode)

    def clear(self):
        for key in TOOLS:
            for suffix in (".mode", ".count", ".started"):
                _remove(os.path.join(self.dir, key + suffix))

    def started(self, key):
        return os.path.exists(os.path.join(self.dir, key + ".started"))

    def reset_log(self):
        _remove(os.path.join(self.dir, "calls"))

    def calls(self):
        """The keys of the tools called since reset_log, in order."""
        try:
            with open(os.path.join(self.dir, "calls")) as handle:
                return handle.read().split()
        except FileNotFoundError:
            return []

    def destroy(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------- running

def product_argv(kind, args, python=None):
    """argv of the hook ('hook') or the init script ('host-rules')."""
    python = python or sys.executable
    if kind == "hook":
        return [python] + netbed.shebang_flags(netbed.HOOK) + [netbed.HOOK] + list(args)
    return [python, netbed.HOST_RULES] + list(args)


class Run(object):
    """A product command started in the bed's host namespace; pid is the
    python process itself once started() returned."""

    def __init__(self, bed, kind, args):
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", bed.ns("h")] + product_argv(kind, args),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bed.env())
        self.pid = self.process.pid
        self.killed_at = None

    def wait_exec(self, limit=10.0):
        """Wait until `ip netns exec` has exec'd python in place; the time."""
        deadline = time.time() + limit
        while time.time() < deadline:
            try:
                if "python" in os.readlink("/proc/%d/exe" % self.pid):
                    return time.time()
            except OSError:  # ended already
                return time.time()
            time.sleep(0.0005)
        raise AssertionError("the product did not start within %gs" % limit)

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finish(self, timeout=RUN_LIMIT):
        """(status, out, err); a command still running after timeout is
        killed and reported with status TIMED_OUT."""
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.process.communicate()
            return TIMED_OUT, out, err + "\n(did not end within %gs)" % timeout
        return self.process.returncode, out, err


def timed_run(bed, kind, args):
    """Run to the end; (seconds from python's exec to its exit, status, out, err)."""
    run = Run(bed, kind, args)
    started = run.wait_exec()
    status, out, err = run.finish()
    return time.time() - started, status, out, err


def killed_run(bed, kind, args, offset):
    """Start, SIGKILL python offset seconds after its exec; the exit status
    (-9 if the kill landed, else the product's own)."""
    run = Run(bed, kind, args)
    started = run.wait_exec()
    left = started + offset - time.time()
    if left > 0:
        time.sleep(left)
    run.kill()
    return run.finish()


def wait_unlocked(bed, limit=40):
    """Wait until no process of ours holds the bed's lock (a killed caller's
    children keep it until they end)."""
    lock = os.path.join(bed.workdir, "lock")
    if os.path.exists(lock):
        subprocess.run(["flock", "-w", str(limit), lock, "true"], check=True)


# ---------------------------------------------------------------- dumps

DUMPS = (("iptables", "iptables-legacy-save"), ("ip6tables", "ip6tables-legacy-save"),
         ("ebtables", "ebtables-nft-save"))


def tables(bed):
    """{'family/table': text} of every table of ours in the bed's host, plus
    'arptables' (its listing), without counters or comments; one process
    in the namespace for all four dumps."""
    separator = "=== vif-rules-fault-dump ==="
    script = "; ".join("%s; echo '%s'" % (tool, separator) for _, tool in DUMPS)
    out = bed.run("h", ["sh", "-ec", script + "; arptables-legacy -L -n"]).stdout
    parts = out.split(separator + "\n")
    result = {}
    for (family, _), text in zip(DUMPS, parts):
        text = re.sub(r"\[\d+:\d+\]", "[0:0]", text)
        name = None
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            if line.startswith("*"):
                name = "%s/%s" % (family, line[1:].strip())
                result[name] = ""
            if name is not None:
                result[name] += line + "\n"
    result["arptables"] = parts[len(DUMPS)]
    return result


def closed(text):
    """text with the FORWARD policy DROP (what a failed family gets)."""
    text = re.sub(r"^:FORWARD ACCEPT", ":FORWARD DROP", text, flags=re.M)
    return text.replace("Chain FORWARD (policy ACCEPT)", "Chain FORWARD (policy DROP)")


def _arp_chains(listing):
    """{chain: (policy or None, [rules])} of an 'arptables -L -n' listing."""
    chains, current = {}, None
    for line in listing.splitlines():
        if line.startswith("Chain "):
            current = line.split()[1]
            policy = "(policy " in line and line.split("(policy ")[1].rstrip(")") or None
            chains[current] = (policy, [])
        elif line.strip() and current is not None:
            chains[current][1].append(line.strip())
    return chains


def _arp_open(listing):
    policy, rules = _arp_chains(listing).get("FORWARD", (None, None))
    return policy == "ACCEPT" and rules == []


def _arp_within(listing, versions):
    """A listing that arptables commands part-way into a rebuild may leave:
    FORWARD DROP, and every chain's rules a prefix of that chain's rules in
    one of the versions (the rebuild flushes, then appends). Any listing is
    within the union when one version is wide open (a stopped host)."""
    versions = [v for v in versions if v is not None]
    if [v for v in versions if _arp_open(v)]:
        return True
    chains = _arp_chains(listing)
    if chains.get("FORWARD", (None,))[0] != "DROP":
        return False
    for name, (policy, rules) in chains.items():
        prefixes = [theirs for theirs in [_arp_chains(v).get(name) for v in versions]
                    if theirs is not None and theirs[1][:len(rules)] == rules]
        if not prefixes:
            return False
    return True


def outside_union(now, versions, host_operation=False):
    """The tables of now (a tables() dict) that equal none of versions (each
    a tables() dict). Each table commits at once (one restore per family),
    so any interruption leaves every table in one version. A host
    operation may also leave a table closed (FORWARD DROP), and arptables,
    set command by command, part-way into a rebuild."""
    bad = []
    keys = set(now)
    for version in versions:
        keys.update(version)
    for key in sorted(keys):
        held = now.get(key)
        allowed = [v.get(key) for v in versions]
        if host_operation:
            allowed += [closed(v) for v in allowed if v is not None]
        if held in allowed:
            continue
        if key == "arptables" and host_operation and _arp_within(held, allowed):
            continue
        bad.append(key)
    return bad


def state_files(bed):
    """{relative path: content} of the bed's state directory: the records,
    pending marks, queued changes; not the results left for callers."""
    result = {}
    for top, dirs, files in os.walk(bed.state_dir):
        if top == bed.state_dir and "results" in dirs:
            dirs.remove("results")
        for name in files:
            path = os.path.join(top, name)
            with open(path) as handle:
                result[os.path.relpath(path, bed.state_dir)] = handle.read()
    return result


# ---------------------------------------------------------------- frames

def spoof_frame(mac, marker):
    """A UDP frame from mac with a foreign IPv4 source, towards the uplink."""
    from scapy.all import IP, UDP, Ether, Raw
    import attacks
    return bytes(Ether(src=mac, dst=attacks.BCAST) /
                 IP(src=attacks.FOREIGN_IP, dst=netbed.UPLINK_IP) /
                 UDP(sport=9999, dport=9999) / Raw(marker))


def spoof_passes(bed, guest):
    """True if a frame with a foreign source from guest reaches the uplink."""
    marker = b"VRMARK-fault-spoof-" + guest.short.encode()
    sniffers = bed.observe(["up"], [marker], seconds=0.6)
    try:
        bed.send(guest.short, [spoof_frame(guest.mac, marker)])
    except BaseException:
        sniffers.kill()
        raise
    return sniffers.counts()["up"][marker] > 0
