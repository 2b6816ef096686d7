#!/usr/bin/env python3
"""A faithful XAPI stand-in for the tests.

Speaks XAPI's wire protocol (XML-RPC over HTTP, responses
{"Status": "Success", "Value": ...} or
{"Status": "Failure", "ErrorDescription": [code, params...]}) on
127.0.0.1 (remote callers) and on a unix socket (dom0-local callers,
like XenAPI.xapi_local() on /var/lib/xcp/xapi).

It holds an in-memory pool of hosts, VMs, VIFs and networks that tests
build through a Python API, and implements host.call_plugin the way
XAPI does (ocaml/xapi/xapi_plugins.ml): only a file whose exact name is
in the plugin directory, run with one argv element holding the
XML-RPC methodCall fn((session_ref, args)), stdout parsed as the
methodResponse.

    from xapi_standin.server import XapiStandin
    with XapiStandin(plugin_dir=d, password="pw") as xs:
        host = xs.add_host("host1", python_for_plugins=PY27,
                           plugin_env={"VIF_RULES_CONF": conf})
        net = xs.add_network("public", bridge="xenbr0")
        vm = xs.add_vm("guest1", resident_on=host, domid=5,
                       xenstore_data={"vm-data/networking/40..": "{...}"})
        vif = xs.add_vif(vm, "0", "40:40:fa:72:92:e4", network=net)
        s = XenAPI.Session(xs.url)
        s.xenapi.login_with_password("root", "pw")
        s.xenapi.host.call_plugin(host, "vif_rules", "get_version", {})

Command line for manual use:
    python3 server.py --port 8080 --socket /tmp/xapi --plugins DIR \\
        --password PW [--fixture pool.json]
"""

import argparse
import copy
import json
import os
import secrets
import shutil
import signal
import socket
import socketserver
import stat
import subprocess
import sys
import threading
import time
import uuid as uuidlib
import xmlrpc.client
from http.server import BaseHTTPRequestHandler

HERE = os.path.dirname(os.path.abspath(__file__))
NULL_REF = "OpaqueRef:NULL"
CLASSES = ("pool", "host", "VM", "VIF", "network")
POWER_STATES = ("Halted", "Paused", "Running", "Suspended")
_UNSET = object()
PLUGIN_PATH = "/usr/local/bin:/opt/xensource/bin:/usr/bin:/bin:/sbin:/usr/sbin"

# Error codes, as in XAPI's datamodel (ocaml/idl/datamodel_errors.ml).
SESSION_AUTHENTICATION_FAILED = "SESSION_AUTHENTICATION_FAILED"
SESSION_INVALID = "SESSION_INVALID"
MESSAGE_METHOD_UNKNOWN = "MESSAGE_METHOD_UNKNOWN"
MESSAGE_PARAMETER_COUNT_MISMATCH = "MESSAGE_PARAMETER_COUNT_MISMATCH"
HANDLE_INVALID = "HANDLE_INVALID"
UUID_INVALID = "UUID_INVALID"
FIELD_TYPE_ERROR = "FIELD_TYPE_ERROR"
INVALID_VALUE = "INVALID_VALUE"
XENAPI_MISSING_PLUGIN = "XENAPI_MISSING_PLUGIN"
XENAPI_PLUGIN_FAILURE = "XENAPI_PLUGIN_FAILURE"


class ApiError(Exception):
    """A XAPI Failure: ErrorDescription = [code] + params (all strings)."""

    def __init__(self, code, *params):
        super().__init__(code, *params)
        self.details = [str(code)] + [str(p) for p in params]

    def __str__(self):
        return str(self.details)


def new_ref():
    return "OpaqueRef:" + str(uuidlib.uuid4())


def new_uuid():
    return str(uuidlib.uuid4())


def _xapi_str(value):
    """How XAPI's query language sees a field value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------
# The query language of get_all_records_where:
#   field "domid" = "5" and (field "resident_on" = "OpaqueRef:..." or not ...)

class _Expr:
    def __init__(self, text):
        self.text = text
        self.toks = self._tokenize(text)
        self.pos = 0

    def _fail(self, why):
        raise ApiError(INVALID_VALUE, "expr", "%s: %s" % (why, self.text))

    def _tokenize(self, text):
        toks, i, n = [], 0, len(text)
        while i < n:
            c = text[i]
            if c.isspace():
                i += 1
            elif c == '"':
                j, buf = i + 1, []
                while j < n and text[j] != '"':
                    if text[j] == "\\" and j + 1 < n:
                        j += 1
                    buf.append(text[j])
                    j += 1
                if j >= n:
                    self._fail("unterminated string")
                toks.append(("str", "".join(buf)))
                i = j + 1
            elif c in "()=":
                toks.append((c, c))
                i += 1
            elif text.startswith("<>", i):
                toks.append(("<>", "<>"))
                i += 2
            elif c.isalpha():
                j = i
                while j < n and (text[j].isalnum() or text[j] == "_"):
                    j += 1
                word = text[i:j].lower()
                if word not in ("field", "and", "or", "not", "true", "false"):
                    self._fail("unknown word %r" % word)
                toks.append((word, word))
                i = j
            else:
                self._fail("unexpected character %r" % c)
        return toks

    def _peek(self):
        if self.pos < len(self.toks):
            return self.toks[self.pos][0]
        return None

    def _take(self, kind):
        if self._peek() != kind:
            self._fail("expected %s" % kind)
        tok = self.toks[self.pos]
        self.pos += 1
        return tok[1]

    def parse(self):
        tree = self._or()
        if self.pos != len(self.toks):
            self._fail("trailing input")
        return tree

    def _or(self):
        node = self._and()
        while self._peek() == "or":
            self._take("or")
            node = ("or", node, self._and())
        return node

    def _and(self):
        node = self._unary()
        while self._peek() == "and":
            self._take("and")
            node = ("and", node, self._unary())
        return node

    def _unary(self):
        kind = self._peek()
        if kind == "not":
            self._take("not")
            return ("not", self._unary())
        if kind == "(":
            self._take("(")
            node = self._or()
            self._take(")")
            return node
        if kind in ("true", "false"):
            self._take(kind)
            return ("const", kind == "true")
        left = self._operand()
        op = self._peek()
        if op not in ("=", "<>"):
            self._fail("expected = or <>")
        self._take(op)
        return (op, left, self._operand())

    def _operand(self):
        if self._peek() == "field":
            self._take("field")
            return ("field", self._take("str"))
        return ("lit", self._take("str"))


def _eval(node, record):
    kind = node[0]
    if kind == "const":
        return node[1]
    if kind == "not":
        return not _eval(node[1], record)
    if kind == "and":
        return _eval(node[1], record) and _eval(node[2], record)
    if kind == "or":
        return _eval(node[1], record) or _eval(node[2], record)

    def value(operand):
        if operand[0] == "field":
            if operand[1] not in record:
                raise ApiError(INVALID_VALUE, "expr", "no field %s" % operand[1])
            return _xapi_str(record[operand[1]])
        return operand[1]

    equal = value(node[1]) == value(node[2])
    return equal if kind == "=" else not equal


# --------------------------------------------------------------------------
# HTTP transport (TCP on loopback and a unix socket).

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"   # one request per connection
    server_version = "xapi-standin"
    timeout = 30                    # bounded reads from a stuck client

    def do_POST(self):
        standin = self.server.standin
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(length) if length > 0 else b""
        try:
            params, method = xmlrpc.client.loads(body)
        except Exception as exc:  # malformed request: an XML-RPC fault
            payload = xmlrpc.client.dumps(
                xmlrpc.client.Fault(-1, "cannot parse request: %s" % exc),
                methodresponse=True)
        else:
            result = standin.dispatch(method or "", params, self.server.local)
            payload = xmlrpc.client.dumps((result,), methodresponse=True,
                                          allow_none=True)
        data = payload.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.send_error(404)

    def log_message(self, fmt, *args):
        if self.server.standin.verbose:
            sys.stderr.write("xapi-standin: " + (fmt % args) + "\n")


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True
    local = False


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = False
    block_on_close = True
    local = True


# --------------------------------------------------------------------------

class XapiStandin:
    """An in-process XAPI stand-in: pool model + XML-RPC servers.

    plugin_dir          directory searched by host.call_plugin (like
                        /etc/xapi.d/plugins); per host overridable.
    socket_path         unix socket for dom0-local callers; default a fresh
                        /tmp/xapistandin-XXXX/xapi (no '_' in it, so the
                        XenAPI package's "http://_tmp_..." URL maps back).
    python_for_plugins  interpreter for plugins ([python, plugin, xml]);
                        None execs the file directly. Per host overridable.
    plugin_env          extra environment for every plugin run; hosts can
                        add their own (add_host(plugin_env=...)).
    trust_local_socket  XAPI treats unix-socket callers as local root: the
                        password is not checked there (True, as dom0).
    """

    def __init__(self, plugin_dir=None, socket_path=None, password="xenroot",
                 user="root", port=0, python_for_plugins=None, plugin_env=None,
                 plugin_timeout=120, trust_local_socket=True, verbose=False):
        self.plugin_dir = plugin_dir
        self.user = user
        self.password = password
        self.port = port
        self.python_for_plugins = python_for_plugins
        self.plugin_env = dict(plugin_env or {})
        self.plugin_timeout = plugin_timeout
        self.trust_local_socket = trust_local_socket
        self.verbose = verbose
        self._requested_socket = socket_path
        self.socket_path = socket_path
        self.workdir = None
        self._own_workdir = False
        self._lock = threading.RLock()
        self._objs = dict((c, {}) for c in CLASSES)
        self._class_of = {}
        self._host_cfg = {}
        self._sessions = {}
        self._procs = set()
        self._servers = []
        self._threads = []
        self._socket_created = False
        self.calls = []          # [(transport, method, params without session)]
        self.plugin_calls = []   # [dict] one per host.call_plugin that ran
        self.pool = None

    # ------------------------------------------------------------ lifecycle

    def start(self):
        if self._servers:
            raise RuntimeError("already started")
        name = "xapistandin-" + secrets.token_hex(6)
        self.workdir = os.path.join("/tmp", name)
        os.mkdir(self.workdir, 0o700)
        self._own_workdir = True
        try:
            if self._requested_socket is None:
                self.socket_path = os.path.join(self.workdir, "xapi")
            else:
                self.socket_path = os.path.abspath(self._requested_socket)
            self._prepare_socket_path(self.socket_path)
            tcp = _TCPServer(("127.0.0.1", self.port), _Handler)
            tcp.standin = self
            self._servers.append(tcp)
            uds = _UnixServer(self.socket_path, _Handler)
            self._socket_created = True
            uds.standin = self
            self._servers.append(uds)
            self.port = tcp.server_address[1]
            for srv in self._servers:
                t = threading.Thread(target=srv.serve_forever,
                                     kwargs={"poll_interval": 0.1},
                                     name="xapi-standin-%s" % type(srv).__name__,
                                     daemon=True)
                t.start()
                self._threads.append(t)
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare_socket_path(self, path):
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise RuntimeError("%s exists and is not a socket" % path)
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(1)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)       # stale socket of a dead server
            else:
                raise RuntimeError("%s is in use by another server" % path)
            finally:
                probe.close()

    def stop(self):
        with self._lock:
            procs = list(self._procs)
        for proc in procs:            # a plugin still running: kill it
            _kill_group(proc)
        for srv in self._servers:
            srv.shutdown()
        for t in self._threads:
            t.join(10)
        for srv in self._servers:
            srv.server_close()        # joins the handler threads
        self._servers = []
        self._threads = []
        if self._socket_created and os.path.lexists(self.socket_path):
            self._socket_created = False
            try:
                if stat.S_ISSOCK(os.lstat(self.socket_path).st_mode):
                    os.unlink(self.socket_path)
            except OSError:
                pass
        if self._own_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._own_workdir = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def url(self):
        """URL for remote callers: XenAPI.Session(xs.url)."""
        return "http://127.0.0.1:%d" % self.port

    @property
    def local_url(self):
        """URL for XenAPI.Session(url, transport=XenAPI.UDSTransport())."""
        if "_" in self.socket_path:
            raise ValueError("socket path %s contains '_': the XenAPI package "
                             "cannot address it" % self.socket_path)
        return "http://" + self.socket_path.replace("/", "_") + "/"

    def session(self, user=None, password=None):
        """A logged-in XenAPI.Session over TCP (the real PyPI client)."""
        import XenAPI
        s = XenAPI.Session(self.url)
        s.xenapi.login_with_password(user or self.user,
                                     self.password if password is None else password,
                                     "1.0", "xapi-standin-tests")
        return s

    def local_session(self, user=None, password=""):
        """A logged-in XenAPI.Session over the unix socket (like xapi_local())."""
        import XenAPI
        s = XenAPI.Session(self.local_url, transport=XenAPI.UDSTransport())
        s.xenapi.login_with_password(user or self.user, password, "1.0",
                                     "xapi-standin-tests")
        return s

    def login(self, user=None, local=False):
        """A valid session ref without going over the wire."""
        ref = new_ref()
        with self._lock:
            self._sessions[ref] = {"user": user or self.user, "local": local,
                                   "created": time.time(), "originator": "test"}
        return ref

    # ----------------------------------------------------------- the model

    def _add(self, cls, record, ref=None):
        ref = ref or new_ref()
        with self._lock:
            for other in self._objs[cls].values():
                if other["uuid"] == record["uuid"]:
                    raise ValueError("duplicate %s uuid %s" % (cls, record["uuid"]))
            self._objs[cls][ref] = record
            self._class_of[ref] = cls
        return ref

    def _obj(self, cls, ref):
        obj = self._objs[cls].get(ref)
        if obj is None:
            raise ApiError(HANDLE_INVALID, cls, ref)
        return obj

    def _check(self, cls, ref):
        with self._lock:
            if ref not in self._objs[cls]:
                raise KeyError("no %s %s" % (cls, ref))

    def add_pool(self, name_label="pool", uuid=None):
        with self._lock:
            if self.pool is not None:
                raise ValueError("the stand-in holds one pool")
            self.pool = self._add("pool", {
                "uuid": uuid or new_uuid(), "name_label": name_label,
                "name_description": "", "master": NULL_REF, "other_config": {}})
            return self.pool

    def add_host(self, name_label, uuid=None, address=None, hostname=None,
                 python_for_plugins=None, plugin_env=None, plugin_dir=None,
                 with_dom0=True, product_version="8.2.1"):
        """A host of the pool (the first one is the master), with its dom0
        control domain VM (domid 0) unless with_dom0=False."""
        with self._lock:
            if self.pool is None:
                self.add_pool()
            n = len(self._objs["host"]) + 1
            ref = self._add("host", {
                "uuid": uuid or new_uuid(), "name_label": name_label,
                "name_description": "", "hostname": hostname or name_label,
                "address": address or "127.0.0.%d" % (n + 1),
                "enabled": True, "API_version_major": "2",
                "API_version_minor": "21", "API_version_vendor": "XenSource",
                "software_version": {"product_version": product_version,
                                     "product_brand": "XenServer"},
                "other_config": {}, "control_domain": NULL_REF})
            self._host_cfg[ref] = {"python_for_plugins": python_for_plugins,
                                   "plugin_env": dict(plugin_env or {}),
                                   "plugin_dir": plugin_dir}
            pool = self._objs["pool"][self.pool]
            if pool["master"] == NULL_REF:
                pool["master"] = ref
            if with_dom0:
                dom0 = self.add_vm("Control domain on host: " + name_label,
                                   domid=0, resident_on=ref, power_state="Running",
                                   is_control_domain=True)
                self._objs["host"][ref]["control_domain"] = dom0
            return ref

    def set_host_plugin_config(self, host, python_for_plugins=_UNSET,
                               plugin_env=_UNSET, plugin_dir=_UNSET):
        with self._lock:
            self._check("host", host)
            cfg = self._host_cfg[host]
            if python_for_plugins is not _UNSET:
                cfg["python_for_plugins"] = python_for_plugins
            if plugin_env is not _UNSET:
                cfg["plugin_env"] = dict(plugin_env or {})
            if plugin_dir is not _UNSET:
                cfg["plugin_dir"] = plugin_dir

    def set_master(self, host):
        with self._lock:
            self._check("host", host)
            self._objs["pool"][self.pool]["master"] = host

    def add_network(self, name_label, bridge=None, uuid=None, other_config=None):
        with self._lock:
            n = len(self._objs["network"])
            return self._add("network", {
                "uuid": uuid or new_uuid(), "name_label": name_label,
                "name_description": "", "bridge": bridge or "xenbr%d" % n,
                "MTU": "1500", "other_config": dict(other_config or {})})

    def _free_domid(self, host):
        used = set(int(v["domid"]) for v in self._objs["VM"].values()
                   if v["resident_on"] == host)
        d = 1
        while d in used:
            d += 1
        return d

    def add_vm(self, name_label, domid=None, resident_on=None, power_state=None,
               xenstore_data=None, uuid=None, is_control_domain=False,
               other_config=None):
        """A VM. With resident_on it is Running there (domid given or the
        lowest free one); without, Halted with domid -1."""
        with self._lock:
            if resident_on is not None:
                self._check("host", resident_on)
            if power_state is None:
                power_state = "Running" if resident_on else "Halted"
            if power_state not in POWER_STATES:
                raise ValueError("power_state %r" % power_state)
            if power_state == "Halted":
                resident_on, domid = None, -1
            elif resident_on is None:
                raise ValueError("a %s VM needs resident_on" % power_state)
            elif domid is None:
                domid = self._free_domid(resident_on)
            return self._add("VM", {
                "uuid": uuid or new_uuid(), "name_label": name_label,
                "name_description": "", "power_state": power_state,
                "domid": str(int(domid)), "resident_on": resident_on or NULL_REF,
                "is_control_domain": bool(is_control_domain),
                "is_a_template": False, "is_a_snapshot": False,
                "xenstore_data": dict(xenstore_data or {}),
                "other_config": dict(other_config or {}),
                "memory_static_max": "1073741824", "VCPUs_max": "1"})

    def add_vif(self, vm, device, MAC, network=None, uuid=None,
                currently_attached=None, other_config=None,
                locking_mode="network_default"):
        with self._lock:
            self._check("VM", vm)
            if network is not None:
                self._check("network", network)
            device = str(device)
            for v in self._objs["VIF"].values():
                if v["VM"] == vm and v["device"] == device:
                    raise ValueError("VM already has a VIF with device %s" % device)
            if currently_attached is None:
                currently_attached = self._objs["VM"][vm]["power_state"] == "Running"
            return self._add("VIF", {
                "uuid": uuid or new_uuid(), "device": device, "MAC": MAC,
                "VM": vm, "network": network or NULL_REF, "MTU": "1500",
                "currently_attached": bool(currently_attached),
                "other_config": dict(other_config or {}),
                "locking_mode": locking_mode, "ipv4_allowed": [],
                "ipv6_allowed": [], "MAC_autogenerated": False})

    def set_domid(self, vm, domid):
        with self._lock:
            self._check("VM", vm)
            self._objs["VM"][vm]["domid"] = str(int(domid))

    def start_vm(self, vm, host, domid=None):
        """Halted -> Running on host (a fresh domid unless given)."""
        with self._lock:
            self._check("VM", vm)
            self._check("host", host)
            rec = self._objs["VM"][vm]
            if domid is None:
                domid = self._free_domid(host)
            rec.update(power_state="Running", resident_on=host, domid=str(int(domid)))
            for v in self._objs["VIF"].values():
                if v["VM"] == vm:
                    v["currently_attached"] = True

    def halt_vm(self, vm):
        with self._lock:
            self._check("VM", vm)
            self._objs["VM"][vm].update(power_state="Halted",
                                        resident_on=NULL_REF, domid="-1")
            for v in self._objs["VIF"].values():
                if v["VM"] == vm:
                    v["currently_attached"] = False

    def set_power_state(self, vm, power_state):
        with self._lock:
            self._check("VM", vm)
            if power_state not in POWER_STATES:
                raise ValueError("power_state %r" % power_state)
            if power_state == "Halted":
                self.halt_vm(vm)
            else:
                self._objs["VM"][vm]["power_state"] = power_state

    def set_xenstore_data(self, vm, data):
        with self._lock:
            self._check("VM", vm)
            self._objs["VM"][vm]["xenstore_data"] = dict(data)

    def set_field(self, ref, field, value):
        """Low-level: set any stored field of any object (wire format)."""
        with self._lock:
            cls = self._class_of[ref]
            self._objs[cls][ref][field] = value

    def remove_vif(self, vif):
        with self._lock:
            self._check("VIF", vif)
            del self._objs["VIF"][vif]
            del self._class_of[vif]

    def remove_vm(self, vm):
        """Destroy a VM and its VIFs (its refs become HANDLE_INVALID)."""
        with self._lock:
            self._check("VM", vm)
            for ref in [r for r, v in self._objs["VIF"].items() if v["VM"] == vm]:
                self.remove_vif(ref)
            del self._objs["VM"][vm]
            del self._class_of[vm]

    def record(self, ref):
        """The XAPI record of any object, as a client would get it."""
        with self._lock:
            return self._record(self._class_of[ref], ref)

    def vm_by_name(self, name_label):
        with self._lock:
            for ref, rec in self._objs["VM"].items():
                if rec["name_label"] == name_label:
                    return ref
        raise KeyError(name_label)

    def host_by_name(self, name_label):
        with self._lock:
            for ref, rec in self._objs["host"].items():
                if rec["name_label"] == name_label:
                    return ref
        raise KeyError(name_label)

    def inventory_path(self, host):
        """A /etc/xensource-inventory for host (INSTALLATION_UUID etc.),
        written into the stand-in's work directory. Also given to every
        plugin run for that host as XAPI_STANDIN_INVENTORY."""
        with self._lock:
            self._check("host", host)
            h = self._objs["host"][host]
            dom0 = h["control_domain"]
            dom0_uuid = ""
            if dom0 != NULL_REF and dom0 in self._objs["VM"]:
                dom0_uuid = self._objs["VM"][dom0]["uuid"]
            text = ("PRODUCT_BRAND='XenServer'\n"
                    "PRODUCT_VERSION='%s'\n"
                    "BUILD_NUMBER='standin'\n"
                    "INSTALLATION_UUID='%s'\n"
                    "CONTROL_DOMAIN_UUID='%s'\n"
                    % (h["software_version"].get("product_version", ""),
                       h["uuid"], dom0_uuid))
        if not self.workdir:
            raise RuntimeError("start the stand-in first")
        path = os.path.join(self.workdir, "inventory-" + h["uuid"])
        tmp = "%s.%s.tmp" % (path, secrets.token_hex(4))  # concurrent calls
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return path

    def load_fixture(self, fixture):
        """Build the model from a dict (the --fixture JSON):
        {"pool": "name", "networks": [{"name_label", "bridge"}],
         "hosts": [{"name_label", "uuid", "address", "python_for_plugins",
                    "plugin_env", "plugin_dir"}],
         "vms": [{"name_label", "host": host name_label, "domid",
                  "power_state", "xenstore_data", "uuid",
                  "vifs": [{"device", "MAC", "network": network name_label}]}]}
        Returns {name_label: ref} for every host, network and VM."""
        refs = {}
        if "pool" in fixture and self.pool is None:
            self.add_pool(fixture["pool"])
        for net in fixture.get("networks", []):
            refs[net["name_label"]] = self.add_network(**net)
        for host in fixture.get("hosts", []):
            refs[host["name_label"]] = self.add_host(**host)
        for vm in fixture.get("vms", []):
            vm = dict(vm)
            vifs = vm.pop("vifs", [])
            host = vm.pop("host", None)
            if host is not None:
                vm["resident_on"] = refs[host]
            ref = self.add_vm(**vm)
            refs[vm["name_label"]] = ref
            for vif in vifs:
                vif = dict(vif)
                if vif.get("network") is not None:
                    vif["network"] = refs[vif["network"]]
                self.add_vif(ref, **vif)
        return refs

    def _record(self, cls, ref):
        """Stored fields plus the derived ones (VIFs, resident_VMs...)."""
        rec = copy.deepcopy(self._obj(cls, ref))
        if cls == "VM":
            rec["VIFs"] = sorted(r for r, v in self._objs["VIF"].items()
                                 if v["VM"] == ref)
        elif cls == "host":
            rec["resident_VMs"] = sorted(r for r, v in self._objs["VM"].items()
                                         if v["resident_on"] == ref)
        elif cls == "network":
            rec["VIFs"] = sorted(r for r, v in self._objs["VIF"].items()
                                 if v["network"] == ref)
        return rec

    # ------------------------------------------------------------ dispatch

    def dispatch(self, method, params, local):
        """Run one XML-RPC call; returns the XAPI response struct."""
        try:
            value = self._dispatch(method, list(params), local)
            return {"Status": "Success", "Value": value}
        except ApiError as err:
            return {"Status": "Failure", "ErrorDescription": err.details}
        except Exception as exc:  # a stand-in bug must still answer
            return {"Status": "Failure",
                    "ErrorDescription": ["INTERNAL_ERROR", "%s: %s" % (
                        type(exc).__name__, exc)]}

    def _count(self, method, params, expected):
        if len(params) != expected:
            raise ApiError(MESSAGE_PARAMETER_COUNT_MISMATCH, method,
                           expected, len(params))

    def _session_check(self, params):
        ref = params[0] if params else ""
        with self._lock:
            if not isinstance(ref, str) or ref not in self._sessions:
                raise ApiError(SESSION_INVALID, ref)
            return ref

    def _dispatch(self, method, params, local):
        transport = "unix" if local else "tcp"
        with self._lock:
            self.calls.append((transport, method, params[1:] if not
                               method.startswith("session.login") else
                               params[:1]))
        cls, _, op = method.partition(".")
        if cls == "session":
            return self._session_call(method, op, params, local)
        if cls not in CLASSES or not op:
            raise ApiError(MESSAGE_METHOD_UNKNOWN, method)
        if cls == "host" and op == "call_plugin":
            self._count(method, params, 5)
            session = self._session_check(params)
            return self._call_plugin(session, *params[1:])
        handler = self._class_call(cls, op, method)
        self._count(method, params, handler[0])
        self._session_check(params)
        with self._lock:
            return handler[1](*params[1:])

    def _session_call(self, method, op, params, local):
        if op in ("login_with_password", "slave_local_login_with_password"):
            if op == "login_with_password" and not 2 <= len(params) <= 4:
                raise ApiError(MESSAGE_PARAMETER_COUNT_MISMATCH, method, 4, len(params))
            if op == "slave_local_login_with_password":
                self._count(method, params, 2)
            user, pw = params[0], params[1]
            ok = user == self.user and (pw == self.password or
                                        (local and self.trust_local_socket))
            if not ok:
                raise ApiError(SESSION_AUTHENTICATION_FAILED, user,
                               "Authentication failure")
            ref = new_ref()
            with self._lock:
                self._sessions[ref] = {
                    "user": user, "local": local, "created": time.time(),
                    "originator": params[3] if len(params) > 3 else ""}
            return ref
        if op in ("logout", "local_logout"):
            self._count(method, params, 1)
            ref = self._session_check(params)
            with self._lock:
                self._sessions.pop(ref, None)
            return ""
        if op == "get_this_host":
            self._count(method, params, 2)
            self._session_check(params)
            with self._lock:
                if params[1] not in self._sessions:
                    raise ApiError(HANDLE_INVALID, "session", params[1])
                return self._objs["pool"][self.pool]["master"] if self.pool else NULL_REF
        raise ApiError(MESSAGE_METHOD_UNKNOWN, method)

    def _class_call(self, cls, op, method):
        """(parameter count incl. session, function of the other params)."""
        objs = self._objs[cls]

        def get_all():
            return sorted(objs)

        def get_all_records():
            return dict((r, self._record(cls, r)) for r in objs)

        def get_all_records_where(expr):
            if not isinstance(expr, str):
                raise ApiError(FIELD_TYPE_ERROR, "expr")
            tree = _Expr(expr).parse()
            out = {}
            for r in objs:
                rec = self._record(cls, r)
                if _eval(tree, rec):
                    out[r] = rec
            return out

        def get_record(ref):
            return self._record(cls, _str(ref))

        def get_by_uuid(uuid):
            for r, rec in objs.items():
                if rec["uuid"] == uuid:
                    return r
            raise ApiError(UUID_INVALID, cls, uuid)

        def get_by_name_label(label):
            return sorted(r for r, rec in objs.items() if rec.get("name_label") == label)

        table = {"get_all": (1, get_all),
                 "get_all_records": (1, get_all_records),
                 "get_all_records_where": (2, get_all_records_where),
                 "get_record": (2, get_record),
                 "get_by_uuid": (2, get_by_uuid)}
        if cls != "VIF":
            table["get_by_name_label"] = (2, get_by_name_label)
        if op in table:
            return table[op]
        if op.startswith("get_"):
            field = op[4:]
            # A field getter exists when the class has that field.
            if field in self._fields(cls):
                return (2, lambda ref: self._record(cls, _str(ref))[field])
        raise ApiError(MESSAGE_METHOD_UNKNOWN, method)

    def _fields(self, cls):
        names = {"pool": ["uuid", "name_label", "name_description", "master",
                          "other_config"],
                 "host": ["uuid", "name_label", "name_description", "hostname",
                          "address", "enabled", "API_version_major",
                          "API_version_minor", "API_version_vendor",
                          "software_version", "other_config",
                          "control_domain", "resident_VMs"],
                 "VM": ["uuid", "name_label", "name_description", "power_state",
                        "domid", "resident_on", "is_control_domain",
                        "is_a_template", "is_a_snapshot", "xenstore_data",
                        "other_config", "memory_static_max", "VCPUs_max",
                        "VIFs"],
                 "VIF": ["uuid", "device", "MAC", "VM", "network", "MTU",
                         "currently_attached", "other_config", "locking_mode",
                         "ipv4_allowed", "ipv6_allowed", "MAC_autogenerated"],
                 "network": ["uuid", "name_label", "name_description", "bridge",
                             "MTU", "other_config", "VIFs"]}
        return names[cls]

    # --------------------------------------------------------- call_plugin

    def _call_plugin(self, session, host, plugin, fn, args):
        if not isinstance(host, str):
            raise ApiError(FIELD_TYPE_ERROR, "host")
        for name, value in (("plugin", plugin), ("fn", fn)):
            if not isinstance(value, str):
                raise ApiError(FIELD_TYPE_ERROR, name)
        if not isinstance(args, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in args.items()):
            raise ApiError(FIELD_TYPE_ERROR, "args")
        with self._lock:
            h = self._obj("host", host)
            cfg = dict(self._host_cfg[host])
            cfg["plugin_env"] = dict(cfg["plugin_env"])
            host_uuid = h["uuid"]
        plugin_dir = cfg["plugin_dir"] or self.plugin_dir
        # As XAPI: only a name listed in the plugin directory.
        try:
            names = os.listdir(plugin_dir) if plugin_dir else []
        except OSError:
            names = []
        if plugin not in names:
            raise ApiError(XENAPI_MISSING_PLUGIN, plugin)
        path = os.path.join(plugin_dir, plugin)
        call = xmlrpc.client.dumps((session, dict(args)), fn)
        if call.startswith("<?xml"):
            call = call[call.index("?>") + 2:].lstrip("\n")
        python = cfg["python_for_plugins"] or self.python_for_plugins
        argv = [python, path, call] if python else [path, call]
        env = self._plugin_env(host, cfg)
        entry = {"host": host, "host_uuid": host_uuid, "plugin": plugin,
                 "fn": fn, "args": dict(args), "session": session,
                 "argv": argv, "env": env, "returncode": None,
                 "stdout": "", "stderr": "", "result": None, "error": None}
        with self._lock:
            self.plugin_calls.append(entry)
        try:
            value = self._run_plugin(path, argv, env, entry)
            entry["result"] = value
            return value
        except ApiError as err:
            entry["error"] = err.details
            raise

    def _plugin_env(self, host, cfg):
        # XAPI's fork-exec gives a plugin a near-empty environment, not the
        # caller's: a default PATH only (never the test runner's venv).
        env = {"PATH": PLUGIN_PATH, "PYTHONDONTWRITEBYTECODE": "1",
               "XAPI_STANDIN_SOCKET": self.socket_path,
               "XAPI_STANDIN_HOST_REF": host,
               "XAPI_STANDIN_HOST_UUID": self._objs["host"][host]["uuid"]}
        if self.workdir:
            env["XAPI_STANDIN_INVENTORY"] = self.inventory_path(host)
        extra = dict(self.plugin_env)
        extra.update(cfg["plugin_env"])
        pythonpath = extra.pop("PYTHONPATH", "")
        env.update(extra)
        env["PYTHONPATH"] = HERE + (":" + pythonpath if pythonpath else "")
        return env

    def _run_plugin(self, path, argv, env, entry):
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            # XAPI's fork-exec fails in the child: a non-zero exit.
            entry["returncode"] = 127
            entry["stderr"] = "cannot execute %s: not an executable file" % path
            raise ApiError(XENAPI_PLUGIN_FAILURE, "non-zero exit", "",
                           entry["stderr"])
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, cwd="/",
                                    close_fds=True, start_new_session=True)
        except OSError as exc:
            entry["returncode"] = 127
            entry["stderr"] = "exec failed: %s" % exc
            raise ApiError(XENAPI_PLUGIN_FAILURE, "non-zero exit", "",
                           entry["stderr"])
        with self._lock:
            self._procs.add(proc)
        try:
            try:
                out, err = proc.communicate(timeout=self.plugin_timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                out, err = proc.communicate(timeout=10)
        finally:
            with self._lock:
                self._procs.discard(proc)
        out = out.decode("utf-8", "replace")
        err = err.decode("utf-8", "replace")
        entry.update(returncode=proc.returncode, stdout=out, stderr=err)
        rc = proc.returncode
        if rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = str(-rc)
            raise ApiError(XENAPI_PLUGIN_FAILURE, "signal: %s" % name, out, err)
        if rc != 0:
            raise ApiError(XENAPI_PLUGIN_FAILURE, "non-zero exit", out, err)
        return _parse_plugin_output(out)


def _str(ref):
    return ref if isinstance(ref, str) else repr(ref)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


def _parse_plugin_output(out):
    """XAPI's reading of a plugin's stdout as an XML-RPC methodResponse."""
    try:
        params, methodname = xmlrpc.client.loads(out)
    except xmlrpc.client.Fault as fault:
        raise ApiError(XENAPI_PLUGIN_FAILURE, "fault", fault.faultCode,
                       fault.faultString)
    except Exception as exc:
        raise ApiError(XENAPI_PLUGIN_FAILURE, "failed to parse plugin output",
                       out, str(exc))
    if methodname is None and len(params) == 1 and isinstance(params[0], dict):
        resp = params[0]
        status = resp.get("Status")
        if status == "Success" and isinstance(resp.get("Value"), str):
            return resp["Value"]
        desc = resp.get("ErrorDescription")
        if (status == "Failure" and isinstance(desc, list) and desc
                and all(isinstance(d, str) for d in desc)):
            raise ApiError(*desc)
    raise ApiError(XENAPI_PLUGIN_FAILURE, "unexpected XMLRPC result", out)


# --------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description="XAPI stand-in for manual tests")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1")
    ap.add_argument("--socket", default=None, help="unix socket path")
    ap.add_argument("--plugins", default=None, help="plugin directory")
    ap.add_argument("--user", default="root")
    ap.add_argument("--password", default="xenroot")
    ap.add_argument("--python-for-plugins", default=None)
    ap.add_argument("--fixture", default=None, help="JSON file (see load_fixture)")
    ap.add_argument("--verbose", action="store_true")
    opts = ap.parse_args(argv)
    xs = XapiStandin(plugin_dir=opts.plugins, socket_path=opts.socket,
                     password=opts.password, user=opts.user, port=opts.port,
                     python_for_plugins=opts.python_for_plugins,
                     verbose=opts.verbose)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    xs.start()
    try:
        if opts.fixture:
            with open(opts.fixture) as f:
                refs = xs.load_fixture(json.load(f))
        else:
            refs = {}
        sys.stdout.write("xapi-standin: %s and unix socket %s\n" % (xs.url, xs.socket_path))
        for name, ref in sorted(refs.items()):
            sys.stdout.write("  %s %s\n" % (ref, name))
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        xs.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
