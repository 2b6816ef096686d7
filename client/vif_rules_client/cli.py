"""vif-rules-client: the command line over vif_rules_client.api.

    vif-rules-client --url https://master --user root --password-file F CMD ...

    version [HOST]                    plugin version of a host (or of all)
    setup-host HOST [--trusted eth0,eth1]
    apply VM_UUID [--network MAC=JSON|MAC=@FILE]... [--tap]
    teardown VM_UUID [--tap]
    status [VM_UUID] [--host HOST]
    sync (HOST | --vm VM_UUID)
    audit [--status-only] [--workers N] [--host HOST]... [--quiet]

The password comes from --password-file (a file, or - for stdin) or the
environment variable VIF_RULES_PASSWORD, never from the command line.
URL and user may also come from VIF_RULES_URL and VIF_RULES_USER.
--json prints the results (or the error) as JSON on stdout.

Exit status: 0 success; for an error the plugin reported, the status the
vif hook gives for it (vif_rules_client.errors, from the plugin's own
table: 1 internal error, 2 invalid argument (and usage), 3 no network data,
4 host not ready, 5 command failed, 6 lock timeout, 7 bad config, 8 the
plugin's XAPI error, 9 state error, 10 command timeout); then the client's
own: 11 connection/login, 12 plugin missing, 13 unknown function, 14 plugin
crashed, 15 incompatible version, 16 not found, 17 VM not running, 18 other
XAPI failure, 19 bad response; audit: 20 when a host is not protected or
failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from . import __version__
from . import errors
from .api import DEFAULT_TIMEOUT, VifRulesClient, audit

PROG = "vif-rules-client"


class UsageError(Exception):
    pass


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    """Options accepted before and after the command."""
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS
    g = parser.add_argument_group("connection and output")
    g.add_argument("--url", default=default(None),
                   help="XAPI URL of the pool master (env VIF_RULES_URL)")
    g.add_argument("--user", default=default(None),
                   help="user name (env VIF_RULES_USER, default root)")
    g.add_argument("--password-file", default=default(None), metavar="FILE",
                   help="file holding the password, - for stdin "
                        "(else env VIF_RULES_PASSWORD)")
    g.add_argument("--timeout", type=float, default=default(DEFAULT_TIMEOUT),
                   help="seconds per XAPI call (default %(default)s)" if top else None)
    g.add_argument("--ignore-ssl", action="store_true", default=default(False),
                   help="do not verify the master's TLS certificate")
    g.add_argument("--no-version-check", action="store_true", default=default(False),
                   help="skip the get_version handshake")
    g.add_argument("--json", action="store_true", default=default(False),
                   help="print results as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Drive the vif_rules XAPI plugin of a XenServer pool.",
        epilog="Exit status: 0 ok, 2 usage, 3-18 one per error kind, "
               "20 audit found problems.")
    parser.add_argument("--version", action="version",
                        version="%s %s" % (PROG, __version__))
    _common(parser, True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, False)
        return p

    p = command("version", "the plugin version of a host, or of every host")
    p.add_argument("host", nargs="?", help="host UUID, name or OpaqueRef")

    p = command("setup-host", "install the host rules on a host")
    p.add_argument("host")
    p.add_argument("--trusted", help="comma list of trusted uplinks (eth0,eth1)")

    p = command("apply", "protect every VIF of a running VM")
    p.add_argument("vm", metavar="VM_UUID")
    p.add_argument("--network", action="append", default=[], metavar="MAC=JSON",
                   help="Nova network info for one MAC (JSON, or @FILE); "
                        "other VIFs: the plugin reads the VM record")
    p.add_argument("--tap", action="store_true", help="also the tap ports (HVM)")

    p = command("teardown", "remove the rules of every VIF of a running VM")
    p.add_argument("vm", metavar="VM_UUID")
    p.add_argument("--tap", action="store_true", help="also the tap ports (HVM)")

    p = command("status", "protection state of a VM's ports or of a host")
    p.add_argument("vm", metavar="VM_UUID", nargs="?")
    p.add_argument("--host", help="a host instead of a VM")

    p = command("sync", "reconcile a host with the VIFs that run there")
    p.add_argument("host", nargs="?")
    p.add_argument("--vm", metavar="VM_UUID", help="the host this VM runs on")

    p = command("audit", "status (and sync) of every host of the pool, in parallel")
    p.add_argument("--status-only", action="store_true", help="do not sync")
    p.add_argument("--workers", type=int, default=8, help="parallel hosts (default 8)")
    p.add_argument("--host", action="append", dest="hosts", metavar="HOST",
                   help="only this host (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


# ------------------------------------------------------------------ inputs

def _password(opts: argparse.Namespace) -> str:
    if opts.password_file:
        try:
            if opts.password_file == "-":
                text = sys.stdin.readline()
            else:
                with open(opts.password_file, encoding="utf-8") as f:
                    text = f.readline()
        except OSError as exc:
            raise UsageError("cannot read the password file: %s" % exc)
        return text.rstrip("\r\n")
    if "VIF_RULES_PASSWORD" in os.environ:
        return os.environ["VIF_RULES_PASSWORD"]
    raise UsageError("no password: use --password-file FILE or VIF_RULES_PASSWORD")


def _networks(items: Sequence[str]) -> Dict[str, Any]:
    result: Dict[str, Any] = {}
    for item in items:
        mac, sep, data = item.partition("=")
        if not sep or not mac or not data:
            raise UsageError("--network takes MAC=JSON or MAC=@FILE, not %r" % item)
        if data.startswith("@"):
            try:
                with open(data[1:], encoding="utf-8") as f:
                    data = f.read()
            except OSError as exc:
                raise UsageError("cannot read %s: %s" % (data[1:], exc))
        try:
            result[mac] = json.loads(data)
        except ValueError as exc:
            raise UsageError("--network for %s is not JSON: %s" % (mac, exc))
    return result


# ------------------------------------------------------------------ output

def _addresses(entry: Dict[str, Any]) -> str:
    return "mac %s ipv4 %s ipv6 %s" % (entry.get("mac", "-"),
                                       ",".join(entry.get("ipv4") or []) or "-",
                                       ",".join(entry.get("ipv6") or []) or "-")


def _text_status(result: Dict[str, Any]) -> List[str]:
    vifs = result.get("vifs") or []
    head = "%s: %s, %d VIF%s" % (result.get("host"),
                                 "protected" if result.get("protected") else "NOT PROTECTED",
                                 len(vifs), "" if len(vifs) == 1 else "s")
    if result.get("vm"):
        head = "VM %s (domid %s) on %s" % (result["vm"], result.get("domid"), head)
    lines = [head]
    for missing in result.get("missing") or []:
        lines.append("  missing: %s" % missing)
    for vif in vifs:
        dropped = vif.get("dropped") or {}
        drops = ", ".join("%s %s" % (k, dropped[k]) for k in sorted(dropped))
        lines.append("  %s %s%s" % (vif.get("vif"), _addresses(vif),
                                    ("; dropped: " + drops) if drops else ""))
    for name in result.get("unprotected") or []:
        lines.append("  %s NOT PROTECTED" % name)
    return lines


def _text_sync(result: Dict[str, Any]) -> List[str]:
    lines = ["%s: sync done" % result.get("host")]
    for key in ("removed", "applied", "unchanged", "without_data", "removed_chains"):
        names = result.get(key) or []
        if names:
            lines.append("  %s: %s" % (key.replace("_", " "), " ".join(map(str, names))))
    return lines


def _emit(opts: argparse.Namespace, value: Any, lines: List[str]) -> None:
    if opts.json:
        sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()


# ---------------------------------------------------------------- commands

def _run(opts: argparse.Namespace) -> int:
    url = opts.url or os.environ.get("VIF_RULES_URL")
    if not url:
        raise UsageError("no URL: use --url or VIF_RULES_URL")
    user = opts.user or os.environ.get("VIF_RULES_USER") or "root"
    if opts.command == "apply":
        networks = _networks(opts.network)       # usage errors before login
    if opts.command == "sync" and (opts.host is None) == (opts.vm is None):
        raise UsageError("sync takes a HOST or --vm VM_UUID")
    if opts.command == "status" and (opts.vm is None) == (opts.host is None):
        raise UsageError("status takes a VM_UUID or --host HOST")
    password = _password(opts)
    with VifRulesClient.connect(url, user, password, timeout=opts.timeout,
                                ignore_ssl=opts.ignore_ssl,
                                check_version=not opts.no_version_check) as client:
        cmd = opts.command
        if cmd == "version":
            hosts = [opts.host] if opts.host else [h[0] for h in client.hosts()]
            infos = [client.version(h) for h in hosts]
            _emit(opts, [i.to_dict() for i in infos] if not opts.host else infos[0].to_dict(),
                  ["%s: api %s, plugin %s" % (i.host_name, i.api_version, i.version)
                   for i in infos])
        elif cmd == "setup-host":
            result = client.setup_host(opts.host, opts.trusted)
            _emit(opts, result, ["%s: host rules installed" % result.get("host")] +
                  ["  %s: %s" % (k, json.dumps(result[k], sort_keys=True))
                   for k in sorted(result) if k not in ("host", "host_ref")])
        elif cmd in ("apply", "teardown"):
            if cmd == "apply":
                done = client.apply(opts.vm, networks, tap=opts.tap)
                lines = ["applied %s on %s: %s%s" % (
                    r.get("vif"), done.host_name, _addresses(r),
                    " (replaced)" if r.get("replaced") else "") for r in done.results]
            else:
                done = client.teardown(opts.vm, tap=opts.tap)
                lines = ["tore down %s on %s%s" % (
                    r.get("vif"), done.host_name,
                    "" if r.get("was_protected") else " (had no rules)")
                    for r in done.results]
            if not done.results:
                lines = ["VM %s has no VIFs" % done.vm_uuid]
            _emit(opts, done.to_dict(), lines)
        elif cmd == "status":
            result = client.status(vm_uuid=opts.vm, host=opts.host)
            _emit(opts, result, _text_status(result))
        elif cmd == "sync":
            result = client.sync(host=opts.host, vm_uuid=opts.vm)
            _emit(opts, result, _text_sync(result))
        elif cmd == "audit":
            summary = audit(client, max_workers=max(1, opts.workers),
                            sync=not opts.status_only,
                            progress=None if opts.quiet else sys.stderr,
                            hosts=opts.hosts, check_version=not opts.no_version_check)
            _emit(opts, summary.to_dict(), [summary.format()])
            return errors.EXIT_OK if summary.all_ok else errors.EXIT_AUDIT_PROBLEMS
        else:   # pragma: no cover (argparse refuses it)
            raise UsageError("unknown command %s" % cmd)
    return errors.EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    opts = parser.parse_args(argv)
    try:
        return _run(opts)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        sys.stderr.write("%s: error: %s\n" % (PROG, exc))
        return errors.EXIT_USAGE
    except errors.VifRulesClientError as exc:
        sys.stderr.write("%s: %s: %s\n" % (PROG, type(exc).__name__, exc.describe()))
        if opts.json:
            sys.stdout.write(json.dumps(exc.to_dict(), indent=2, sort_keys=True) + "\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("%s: interrupted\n" % PROG)
        return 130


if __name__ == "__main__":
    sys.exit(main())
