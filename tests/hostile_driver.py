"""Runs hostile inputs through the dom0 entry points, one case per stdin line.

Started once per interpreter under test (Python 2.7, 3.6) inside the test
bed's host namespace by tests/test_hostile_input.py, which generates the
cases with hypothesis and judges the answers. Each case is a JSON object:

    {"entry": "hook", "argv": [hex of each argument's bytes]}
    {"entry": "host_rules", "argv": [...]}
    {"entry": "plugin", "fn": name, "args": {name: value}}   # XML-RPC values
    {"entry": "config", "text": hex of the file's bytes}     # hook and host-rules on it
    {"entry": "dump"}                                        # every family's rules + records

and each answer one JSON line: what the entry point wrote, its exit status
or Failure, the syslog lines it sent, and "traceback" if anything escaped
it. The hook and host-rules run in this process (hook_main/host_rules_main
with argv as the OS would hand it over); plugin functions run through the
XenAPIPlugin stand-in's dispatch exactly as a plugin process does (argv[1]
an XML-RPC methodCall, the answer an XML-RPC methodResponse on stdout).
syslog is the module's boundary: a recorder stands in for it, so the test
sees every line and the machine's log gets none of the thousands.
"""

import binascii
import io
import json
import os
import re
import subprocess
import sys
import traceback

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(TESTS), "xapi-plugin"))
sys.path.insert(0, os.path.join(TESTS, "xapi_standin"))

import XenAPIPlugin  # noqa: E402  (the stand-in)
from vifrules import cli, log, plugin  # noqa: E402

PY3 = sys.version_info[0] >= 3
COUNTERS = re.compile(r"\[\d+:\d+\]")
if PY3:
    import xmlrpc.client as xmlrpclib
else:
    import xmlrpclib  # noqa: F401


class SyslogRecorder(object):
    LOG_INFO, LOG_ERR, LOG_PID, LOG_DAEMON = 6, 3, 1, 24

    def __init__(self):
        self.lines = []

    def openlog(self, ident, option, facility):
        self.ident = ident

    def syslog(self, priority, message):
        # What the real module would send, or its exception: Python 3
        # encodes UTF-8 (a lone surrogate raises), Python 2 takes str or
        # ASCII unicode.
        if PY3:
            message = message.encode("utf-8").decode("latin-1")
        elif not isinstance(message, str):
            message = message.encode("ascii")
        else:
            message = message.decode("latin-1")
        self.lines.append([priority, self.ident, message])


class Py2Stream(object):
    """A Python 2 file on a pipe: str goes out as it is, unicode must be ASCII."""

    def __init__(self):
        self.parts = []

    def write(self, text):
        if not isinstance(text, str):
            text = text.encode("ascii")
        self.parts.append(text)

    def flush(self):
        pass

    def getvalue(self):
        return "".join(self.parts).decode("latin-1")


def stream():
    """What a plugin or hook has on stdout/stderr: a pipe whose encoding is
    strict ASCII (XAPI runs plugins without a UTF-8 locale)."""
    if PY3:
        return io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    return Py2Stream()


def value_of(out):
    if PY3:
        out.flush()
        return out.buffer.getvalue().decode("ascii")
    return out.getvalue()


def os_argv(hexes):
    """Arguments as a process receives them: bytes on Python 2, on Python 3
    decoded from the file system encoding with surrogateescape."""
    raw = [binascii.unhexlify(h.encode("ascii")) for h in hexes]
    if PY3:
        return [os.fsdecode(b) for b in raw]
    return raw


def run_cli(main, argv):
    out, err = stream(), stream()
    del RECORDER.lines[:]
    status = main(argv, stdout=out, stderr=err)
    return {"status": status, "stdout": value_of(out), "stderr": value_of(err),
            "syslog": list(RECORDER.lines)}


def run_plugin(fn, args):
    call = xmlrpclib.dumps(("OpaqueRef:hostile-input", args), fn)
    saved_argv, saved_out = sys.argv, sys.stdout
    sys.argv = ["vif_rules", call]
    sys.stdout = stream()
    del RECORDER.lines[:]
    try:
        XenAPIPlugin.dispatch(plugin.function_table(XenAPIPlugin.Failure))
        text = value_of(sys.stdout)
    finally:
        sys.stdout = saved_out
        sys.argv = saved_argv
    reply = xmlrpclib.loads(text)[0][0]
    return {"reply": reply, "stdout": text, "syslog": list(RECORDER.lines)}


def run_config(text_hex, path):
    handle = open(path, "wb")
    handle.write(binascii.unhexlify(text_hex.encode("ascii")))
    handle.close()
    saved = os.environ.get("VIF_RULES_CONF")
    os.environ["VIF_RULES_CONF"] = path
    try:
        hook = run_cli(cli.hook_main, ["offline", "vif77.0"])
        host = run_cli(cli.host_rules_main, ["status"])
    finally:
        os.environ["VIF_RULES_CONF"] = saved
    return {"hook": hook, "host_rules": host}


def dump(commands, state_dir):
    """Every family's rules (counters masked) and every record, as text."""
    parts = []
    for argv in commands:
        text = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE).communicate()[0]
        if PY3:
            text = text.decode("latin-1")
        text = COUNTERS.sub("[0:0]", text)  # built-in chains' packet counters
        lines = [line for line in text.splitlines() if not line.startswith("#")]
        parts.append("\n".join(lines))
    for top, dirs, files in os.walk(state_dir):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(top, name)
            handle = open(path, "rb")
            data = handle.read()
            handle.close()
            if PY3:
                data = data.decode("latin-1")
            parts.append("%s:\n%s" % (path, data))
    return "\n".join(parts)


RECORDER = SyslogRecorder()


def main():
    setup = json.loads(sys.stdin.readline())
    log.syslog = RECORDER
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in iter(sys.stdin.readline, ""):
        case = json.loads(line)
        try:
            entry = case["entry"]
            if entry == "hook":
                answer = run_cli(cli.hook_main, os_argv(case["argv"]))
            elif entry == "host_rules":
                answer = run_cli(cli.host_rules_main, os_argv(case["argv"]))
            elif entry == "plugin":
                answer = run_plugin(case["fn"], case["args"])
            elif entry == "config":
                answer = run_config(case["text"], setup["scratch_config"])
            else:
                answer = {"dump": dump(setup["dump_commands"], setup["state_dir"])}
        except BaseException:
            answer = {"traceback": traceback.format_exc()}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
