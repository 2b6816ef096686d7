"""Drive the vif_rules XAPI plugin of every host from a cloud controller.

    from vif_rules_client import VifRulesClient, audit

    with VifRulesClient.connect("https://pool-master", "root", password) as c:
        c.apply(vm_uuid)                        # the plugin reads the VM record
        c.apply(vm_uuid, {"02:00:00:00:00:05": nova_network_info})
        c.status(vm_uuid)
        c.teardown(vm_uuid)
        summary = audit(c, max_workers=8, progress=sys.stderr)
        print(summary)

Every call goes through the pool master:
``session.xenapi.host.call_plugin(host_ref, "vif_rules", fn, args)``;
XAPI forwards it to the host named. Errors come back as the exceptions of
vif_rules_client.errors (mapped in errors.from_failure only).
"""

from __future__ import annotations

import json
import ssl
import sys
import threading
import time
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, IO, Iterable, List, Mapping, Optional,
                    Sequence, Tuple, Union)

import XenAPI

from . import errors
from .errors import (BadResponse, ConnectionFailed, HostNotFound,
                     IncompatibleVersion, InvalidArgument, PluginMissing,
                     UnknownFunction, VifRulesClientError, VmNotFound,
                     VmNotRunning, XapiCallFailed)

PLUGIN = "vif_rules"
#: plugin API major versions this client speaks
SUPPORTED_API_MAJORS = (1,)
DEFAULT_TIMEOUT = 120.0
#: power states in which a VM has a domain, hence VIF ports, on its host
LIVE_POWER_STATES = ("Running", "Paused")
NULL_REF = "OpaqueRef:NULL"

SessionFactory = Callable[[], Any]


# ---------------------------------------------------------------- transport

class _TimeoutMixin:
    """A socket timeout on every XML-RPC request."""

    def __init__(self, timeout: Optional[float] = DEFAULT_TIMEOUT, **kwargs: Any):
        super().__init__(**kwargs)
        self.timeout = timeout

    def make_connection(self, host):  # type: ignore[override]
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn


class _TimeoutTransport(_TimeoutMixin, xmlrpc.client.Transport):
    """XML-RPC over HTTP with a timeout."""


class _TimeoutSafeTransport(_TimeoutMixin, xmlrpc.client.SafeTransport):
    """XML-RPC over HTTPS with a timeout."""


def _transport(url: str, timeout: Optional[float], ignore_ssl: bool):
    if url.lower().startswith("https:"):
        context = ssl._create_unverified_context() if ignore_ssl else None
        return _TimeoutSafeTransport(timeout=timeout, context=context)
    return _TimeoutTransport(timeout=timeout)


def xapi_call(what: str, function: Callable[..., Any], *args: Any,
              url: Optional[str] = None, host: Optional[str] = None,
              plugin_function: Optional[str] = None) -> Any:
    """Run one XAPI call; every failure becomes a VifRulesClientError."""
    try:
        return function(*args)
    except XenAPI.Failure as failure:
        raise errors.from_failure(failure, host=host,
                                  function=plugin_function or what) from failure
    except xmlrpc.client.Fault as fault:
        raise XapiCallFailed(str(fault.faultCode), fault.faultString,
                             code="XMLRPC_FAULT", host=host,
                             function=plugin_function or what) from fault
    except (OSError, xmlrpc.client.ProtocolError, ssl.SSLError) as exc:
        raise ConnectionFailed(url or "XAPI", "%s: %s" % (type(exc).__name__, exc),
                               host=host, function=plugin_function or what) from exc


@dataclass
class Connection:
    """How to log in to a pool master; each login() is a new session."""

    url: str
    user: str = "root"
    password: str = field(default="", repr=False)
    timeout: Optional[float] = DEFAULT_TIMEOUT
    ignore_ssl: bool = False
    originator: str = "vif-rules-client"

    def login(self):
        """A logged-in XenAPI.Session (the caller logs it out)."""
        session = XenAPI.Session(self.url, transport=_transport(
            self.url, self.timeout, self.ignore_ssl))
        xapi_call("session.login_with_password",
                  session.xenapi.login_with_password, self.user, self.password,
                  "1.0", self.originator, url=self.url)
        return session

    __call__ = login   # a Connection is a session factory


def session_factory_from(session: Any) -> Optional[SessionFactory]:
    """A factory of new sessions like `session` (same URL, same login), for
    worker threads (XenAPI.Session is not thread-safe); None if unknown."""
    state = vars(session) if hasattr(session, "__dict__") else {}
    method = state.get("last_login_method")
    params = state.get("last_login_params")
    host = state.get("_ServerProxy__host")
    handler = state.get("_ServerProxy__handler") or "/"
    transport = state.get("_ServerProxy__transport")
    if not (isinstance(method, str) and method.startswith("login") and params
            and isinstance(host, str)):
        return None
    if isinstance(transport, XenAPI.UDSTransport):
        url = "http://%s%s" % (host, handler)
        make_transport: Callable[[], Any] = XenAPI.UDSTransport
    elif isinstance(transport, xmlrpc.client.SafeTransport):
        url = "https://%s%s" % (host, handler)
        timeout = getattr(transport, "timeout", DEFAULT_TIMEOUT)
        context = getattr(transport, "context", None)
        make_transport = lambda: _TimeoutSafeTransport(timeout=timeout, context=context)
    else:
        url = "http://%s%s" % (host, handler)
        timeout = getattr(transport, "timeout", DEFAULT_TIMEOUT)
        make_transport = lambda: _TimeoutTransport(timeout=timeout)

    def login():
        new = XenAPI.Session(url, transport=make_transport())
        xapi_call("session.%s" % method, getattr(new.xenapi, method), *params, url=url)
        return new
    return login


def _logout(session: Any) -> None:
    try:
        session.xenapi.session.logout()
    except Exception:   # best effort: the session expires on its own
        pass


# ------------------------------------------------------------------- model

@dataclass
class VifInfo:
    device: str
    mac: str
    ref: str
    name: str               # vif<domid>.<device>


@dataclass
class VmInfo:
    uuid: str
    ref: str
    name_label: str
    power_state: str
    host_ref: str
    host_name: str
    domid: int
    vifs: List[VifInfo]

    def port_names(self, tap: bool = True) -> List[str]:
        names = [v.name for v in self.vifs]
        if tap:
            names += ["tap%d.%s" % (self.domid, v.device) for v in self.vifs]
        return names


@dataclass
class VmResult:
    """What apply/teardown did for one VM: one plugin result per port."""

    function: str
    vm_uuid: str
    vm_name: str
    host_ref: str
    host_name: str
    domid: int
    results: List[Dict[str, Any]]

    def to_dict(self) -> Dict[str, Any]:
        return {"function": self.function, "vm": self.vm_uuid,
                "vm_name": self.vm_name, "host": self.host_name,
                "host_ref": self.host_ref, "domid": self.domid,
                "results": self.results}


@dataclass
class VersionInfo:
    host_ref: str
    host_name: str
    api_version: str
    version: str

    @property
    def major(self) -> int:
        return _api_major(self.api_version)

    def to_dict(self) -> Dict[str, Any]:
        return {"host": self.host_name, "host_ref": self.host_ref,
                "api_version": self.api_version, "version": self.version}


def _api_major(text: str) -> int:
    try:
        return int(str(text).split(".")[0])
    except ValueError:
        return -1


def _normal_mac(mac: str) -> str:
    return str(mac).strip().lower().replace("-", ":")


# ------------------------------------------------------------------ client

class VifRulesClient:
    """The vif_rules plugin of a pool, driven through one XAPI session.

    session          a logged-in XenAPI.Session (to the pool master)
    session_factory  makes more sessions like it (for audit's workers)
    check_version    handshake with get_version once per host before the
                     first other call, refusing an incompatible plugin
    Not thread-safe (as XenAPI.Session): one client per thread.
    """

    def __init__(self, session: Any, session_factory: Optional[SessionFactory] = None,
                 check_version: bool = True, owns_session: bool = False):
        self.session = session
        self.session_factory = session_factory
        self.check_version = check_version
        self._owns_session = owns_session
        self._versions: Dict[str, VersionInfo] = {}
        self._host_names: Dict[str, str] = {}

    @classmethod
    def connect(cls, url: str, user: str = "root", password: str = "",
                timeout: Optional[float] = DEFAULT_TIMEOUT, ignore_ssl: bool = False,
                check_version: bool = True) -> "VifRulesClient":
        connection = Connection(url, user, password, timeout, ignore_ssl)
        return cls(connection.login(), session_factory=connection,
                   check_version=check_version, owns_session=True)

    def close(self) -> None:
        if self._owns_session and self.session is not None:
            _logout(self.session)
            self.session = None

    def __enter__(self) -> "VifRulesClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------- XAPI lookups

    def _x(self, what: str, *args: Any) -> Any:
        obj: Any = self.session.xenapi
        for part in what.split("."):
            obj = getattr(obj, part)
        return xapi_call(what, obj, *args)

    def host_ref(self, host: str) -> str:
        """A host given by OpaqueRef, UUID or name label -> its ref."""
        host = str(host)
        if host.startswith("OpaqueRef:"):
            try:
                self.host_name(host, refresh=True)
            except XapiCallFailed as exc:
                raise HostNotFound("host", host, exc.describe()) from exc
            return host
        try:
            return self._x("host.get_by_uuid", host)
        except XapiCallFailed:
            pass
        refs = self._x("host.get_by_name_label", host)
        if len(refs) == 1:
            return refs[0]
        if not refs:
            raise HostNotFound("host", host, "no host with this UUID or name")
        raise HostNotFound("host", host, "%d hosts have this name" % len(refs))

    def host_name(self, host_ref: str, refresh: bool = False) -> str:
        if refresh or host_ref not in self._host_names:
            self._host_names[host_ref] = self._x("host.get_name_label", host_ref)
        return self._host_names[host_ref]

    def hosts(self) -> List[Tuple[str, str, str]]:
        """[(ref, name_label, uuid)] of every host of the pool, by name."""
        records = self._x("host.get_all_records")
        result = []
        for ref, rec in records.items():
            self._host_names[ref] = rec.get("name_label", ref)
            result.append((ref, rec.get("name_label", ref), rec.get("uuid", "")))
        return sorted(result, key=lambda r: (r[1], r[2]))

    def vm(self, vm_uuid: str) -> VmInfo:
        """A running VM's host, domid and VIFs (by device order)."""
        try:
            ref = self._x("VM.get_by_uuid", str(vm_uuid))
        except XapiCallFailed as exc:
            if exc.code in ("UUID_INVALID", "HANDLE_INVALID"):
                raise VmNotFound("VM", vm_uuid, exc.describe()) from exc
            raise
        rec = self._x("VM.get_record", ref)
        if rec.get("is_control_domain"):
            raise VmNotFound("VM", vm_uuid, "is a control domain, not a guest")
        power = rec.get("power_state", "")
        host = rec.get("resident_on") or NULL_REF
        try:
            domid = int(rec.get("domid", -1))
        except (TypeError, ValueError):
            domid = -1
        if power not in LIVE_POWER_STATES or host == NULL_REF or domid <= 0:
            raise VmNotRunning(vm_uuid, power or "unknown")
        vifs = []
        for vif_ref in rec.get("VIFs", []):
            vrec = self._x("VIF.get_record", vif_ref)
            device = str(vrec.get("device", ""))
            vifs.append(VifInfo(device, _normal_mac(vrec.get("MAC", "")), vif_ref,
                                "vif%d.%s" % (domid, device)))
        vifs.sort(key=lambda v: (len(v.device), v.device))
        return VmInfo(str(rec.get("uuid", vm_uuid)), ref, rec.get("name_label", ""),
                      power, host, self.host_name(host), domid, vifs)

    # ------------------------------------------------------- plugin calls

    def call(self, host_ref: str, function: str,
             args: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
        """One plugin call on one host; the decoded JSON object it returns."""
        if self.check_version and function != "get_version":
            self._handshake(host_ref)
        return self._call(host_ref, function, args)

    def _call(self, host_ref: str, function: str,
              args: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
        wire_args = dict((str(k), str(v)) for k, v in (args or {}).items())
        label = self._host_names.get(host_ref, host_ref)
        text = xapi_call("host.call_plugin", self.session.xenapi.host.call_plugin,
                         host_ref, PLUGIN, function, wire_args,
                         host=label, plugin_function=function)
        try:
            value = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise BadResponse(function, "not JSON: %s" % exc, str(text)[:500],
                              host=label, function=function) from exc
        if not isinstance(value, dict):
            raise BadResponse(function, "not a JSON object", str(text)[:500],
                              host=label, function=function)
        return value

    def _handshake(self, host_ref: str) -> VersionInfo:
        info = self._versions.get(host_ref)
        if info is None:
            info = self.version(host_ref)
        return info

    def version(self, host: str) -> VersionInfo:
        """The plugin's version on a host; IncompatibleVersion if its API
        major version is not one this client speaks."""
        ref = self.host_ref(host)
        name = self.host_name(ref)
        value = self._call(ref, "get_version")
        api = value.get("api_version")
        if not isinstance(api, str):
            raise BadResponse("get_version", "no api_version", json.dumps(value)[:500],
                              host=name, function="get_version")
        info = VersionInfo(ref, name, api, str(value.get("version", "")))
        if info.major not in SUPPORTED_API_MAJORS:
            raise IncompatibleVersion(name, api, ",".join(
                "%d.x" % m for m in SUPPORTED_API_MAJORS), host=name,
                function="get_version")
        self._versions[ref] = info
        return info

    def setup_host(self, host: str, trusted: Optional[Union[str, Sequence[str]]] = None
                   ) -> Dict[str, Any]:
        """Install the host rules (trusted: uplinks, else the host's config)."""
        ref = self.host_ref(host)
        args = {}
        if trusted is not None:
            if not isinstance(trusted, str):
                trusted = ",".join(trusted)
            args["trusted"] = trusted
        result = self.call(ref, "setup_host", args)
        result.setdefault("host", self.host_name(ref))
        return result

    def apply(self, vm_uuid: str,
              network_by_mac: Optional[Mapping[str, Union[str, Mapping[str, Any]]]] = None,
              tap: bool = False) -> VmResult:
        """Protect every VIF of a running VM on the host it is resident on.

        network_by_mac: {MAC: Nova's network info (dict or JSON text)}; a VIF
        whose MAC is not in it lets the plugin read the VM record. tap=True
        also protects the tap<domid>.<dev> ports (HVM guests).

        All VIFs are tried; if any failed, the first error is raised with
        .vif (the port) and .completed (the results of the others)."""
        info = self.vm(vm_uuid)
        networks: Dict[str, str] = {}
        for mac, data in (network_by_mac or {}).items():
            networks[_normal_mac(mac)] = data if isinstance(data, str) else \
                json.dumps(data, sort_keys=True)
        macs = set(v.mac for v in info.vifs)
        for mac in networks:
            if mac not in macs:
                raise InvalidArgument("network_by_mac", mac,
                                      "VM %s has no VIF with this MAC" % info.uuid,
                                      host=info.host_name, function="apply_vif")
        calls = []
        for vif in info.vifs:
            args = {}
            if vif.mac in networks:
                args["network"] = networks[vif.mac]
            calls.append(dict(args, vif=vif.name))
            if tap:
                calls.append(dict(args, vif="tap%d.%s" % (info.domid, vif.device)))
        return self._per_port(info, "apply_vif", calls)

    def teardown(self, vm_uuid: str, tap: bool = False) -> VmResult:
        """Remove the rules of every VIF of a running VM (tap=True: also its
        tap ports). Rules of a VM already gone are removed by sync()."""
        info = self.vm(vm_uuid)
        calls = [{"vif": name} for name in info.port_names(tap=tap)]
        return self._per_port(info, "teardown_vif", calls)

    def _per_port(self, info: VmInfo, function: str,
                  calls: Iterable[Dict[str, str]]) -> VmResult:
        results: List[Dict[str, Any]] = []
        first: Optional[VifRulesClientError] = None
        for args in calls:
            try:
                results.append(self.call(info.host_ref, function, args))
            except (IncompatibleVersion, ConnectionFailed, PluginMissing,
                    UnknownFunction, XapiCallFailed):
                raise   # the same for every port: no use trying the others
            except VifRulesClientError as exc:
                exc.vif = args["vif"]  # type: ignore[attr-defined]
                if first is None:
                    first = exc
        if first is not None:
            first.completed = results  # type: ignore[attr-defined]
            raise first
        return VmResult(function, info.uuid, info.name_label, info.host_ref,
                        info.host_name, info.domid, results)

    def status(self, vm_uuid: Optional[str] = None, host: Optional[str] = None
               ) -> Dict[str, Any]:
        """The plugin's status of a host, or of a VM's ports on its host.

        For a VM: "vifs" keeps only its ports, "unprotected" lists its
        vif<domid>.<dev> ports that have no rules on record."""
        if vm_uuid is None and host is None:
            raise ValueError("status needs vm_uuid or host")
        if vm_uuid is not None:
            info = self.vm(vm_uuid)
            result = self.call(info.host_ref, "status", {})
            mine = set(info.port_names(tap=True))
            vifs = [v for v in result.get("vifs", []) if v.get("vif") in mine]
            seen = set(v.get("vif") for v in vifs)
            result["vifs"] = vifs
            result["unprotected"] = [v.name for v in info.vifs if v.name not in seen]
            result.update(vm=info.uuid, vm_name=info.name_label, domid=info.domid,
                          host=info.host_name, host_ref=info.host_ref)
            return result
        ref = self.host_ref(str(host))
        result = self.call(ref, "status", {})
        result.update(host=self.host_name(ref), host_ref=ref)
        return result

    def sync(self, host: Optional[str] = None, vm_uuid: Optional[str] = None
             ) -> Dict[str, Any]:
        """Reconcile a host (or the host a VM is resident on) with what runs."""
        if (host is None) == (vm_uuid is None):
            raise ValueError("sync needs exactly one of host or vm_uuid")
        if vm_uuid is not None:
            ref = self.vm(vm_uuid).host_ref
        else:
            ref = self.host_ref(str(host))
        result = self.call(ref, "sync", {})
        result.update(host=self.host_name(ref), host_ref=ref)
        return result


# ------------------------------------------------------------------- audit

@dataclass
class HostAudit:
    host_ref: str
    host_name: str
    host_uuid: str
    state: str = "error"                  # "ok" | "not protected" | "error"
    protected: Optional[bool] = None
    vifs: int = 0
    missing: List[str] = field(default_factory=list)
    api_version: str = ""
    sync: Optional[Dict[str, Any]] = None
    error: Optional[VifRulesClientError] = None
    seconds: float = 0.0

    def line(self) -> str:
        if self.error is not None:
            text = "%s: ERROR %s" % (self.host_name, self.error.describe(where=False))
            if self.error.function:
                text += " in %s" % self.error.function
            return text
        text = "%s: %s, %d VIF%s" % (self.host_name,
                                     "protected" if self.protected else "NOT PROTECTED",
                                     self.vifs, "" if self.vifs == 1 else "s")
        if not self.protected and self.missing:
            shown = "; ".join(self.missing[:3])
            more = len(self.missing) - 3
            text += " (missing: %s%s)" % (shown, (" and %d more" % more) if more > 0 else "")
        if self.sync is not None:
            text += "; sync: %s" % _sync_counts(self.sync)
            if self.vifs_after_sync is not None:
                text += " -> %d VIF%s" % (self.vifs_after_sync,
                                          "" if self.vifs_after_sync == 1 else "s")
        return text

    @property
    def vifs_after_sync(self) -> Optional[int]:
        protected = (self.sync or {}).get("protected")
        return len(protected) if isinstance(protected, list) else None

    def to_dict(self) -> Dict[str, Any]:
        return {"host": self.host_name, "host_ref": self.host_ref,
                "host_uuid": self.host_uuid, "state": self.state,
                "protected": self.protected, "vifs": self.vifs,
                "missing": self.missing, "api_version": self.api_version,
                "sync": self.sync, "vifs_after_sync": self.vifs_after_sync,
                "error": self.error.to_dict() if self.error else None,
                "seconds": round(self.seconds, 3)}


_SYNC_KEYS = ("removed", "applied", "unchanged", "without_data")


def _sync_counts(result: Mapping[str, Any]) -> str:
    return ", ".join("%d %s" % (len(result.get(k) or []), k.replace("_", " "))
                     for k in _SYNC_KEYS)


@dataclass
class AuditSummary:
    hosts: List[HostAudit]
    synced: bool
    seconds: float

    @property
    def total(self) -> int:
        return len(self.hosts)

    @property
    def ok(self) -> int:
        return sum(1 for h in self.hosts if h.state == "ok")

    @property
    def not_protected(self) -> int:
        return sum(1 for h in self.hosts if h.state == "not protected")

    @property
    def errors(self) -> int:
        return sum(1 for h in self.hosts if h.state == "error")

    @property
    def all_ok(self) -> bool:
        return self.ok == self.total

    @property
    def vifs(self) -> int:
        return sum(h.vifs for h in self.hosts)

    def sync_total(self, key: str) -> int:
        return sum(len((h.sync or {}).get(key) or []) for h in self.hosts)

    def format(self) -> str:
        lines = ["audit of %d host%s in %.1fs: %d ok, %d not protected, %d errors; "
                 "%d protected VIFs" % (self.total, "" if self.total == 1 else "s",
                                        self.seconds, self.ok, self.not_protected,
                                        self.errors, self.vifs)]
        if self.synced:
            lines.append("sync: " + ", ".join("%d %s" % (self.sync_total(k),
                                                         k.replace("_", " "))
                                              for k in _SYNC_KEYS))
        for h in self.hosts:
            if h.state != "ok":
                lines.append("  %s" % h.line())
        return "\n".join(lines)

    __str__ = format

    def to_dict(self) -> Dict[str, Any]:
        return {"total": self.total, "ok": self.ok,
                "not_protected": self.not_protected, "errors": self.errors,
                "vifs": self.vifs, "synced": self.synced,
                "sync": dict((k, self.sync_total(k)) for k in _SYNC_KEYS)
                if self.synced else None,
                "seconds": round(self.seconds, 3),
                "hosts": [h.to_dict() for h in self.hosts]}


ProgressCallback = Callable[[int, int, HostAudit], None]


def _progress_function(progress: Union[None, ProgressCallback, IO[str]]
                       ) -> Optional[ProgressCallback]:
    if progress is None or callable(progress):
        return progress  # type: ignore[return-value]
    stream = progress

    def write(done: int, total: int, result: HostAudit) -> None:
        stream.write("[%d/%d] %s\n" % (done, total, result.line()))
        stream.flush()
    return write


class _LockedDispatcher:
    """session.xenapi of a shared session, one call at a time."""

    def __init__(self, target: Any, lock: threading.Lock):
        self._target = target
        self._lock = lock

    def __getattr__(self, name: str) -> "_LockedDispatcher":
        return _LockedDispatcher(getattr(self._target, name), self._lock)

    def __call__(self, *args: Any) -> Any:
        with self._lock:
            return self._target(*args)


class _LockedSession:
    def __init__(self, session: Any, lock: threading.Lock):
        self.xenapi = _LockedDispatcher(session.xenapi, lock)


def audit(session: Any, max_workers: int = 8, sync: bool = True,
          progress: Union[None, ProgressCallback, IO[str]] = None,
          session_factory: Optional[SessionFactory] = None,
          hosts: Optional[Sequence[str]] = None,
          check_version: bool = True) -> AuditSummary:
    """status (then sync, unless sync=False) on every host of the pool, in
    parallel; returns the summary. Never raises for one host's failure: it
    is that host's state "error".

    session           a VifRulesClient, a Connection, or a XenAPI.Session
    session_factory   makes a logged-in session per worker thread; by
                      default from the client/Connection, else cloned from
                      the session's login. Without any, the workers share
                      the session one call at a time.
    progress          a callable(done, total, HostAudit) or a text stream
                      ("[3/10] host-x: protected, 12 VIFs; sync: ...")
    hosts             only these hosts (refs, UUIDs or names)
    """
    started = time.monotonic()
    owned: List[Any] = []
    if isinstance(session, Connection):
        session_factory = session_factory or session
        session = session.login()
        owned.append(session)
    elif isinstance(session, VifRulesClient):
        session_factory = session_factory or session.session_factory
        session = session.session
    if session_factory is None:
        session_factory = session_factory_from(session)
    report = _progress_function(progress)
    lister = VifRulesClient(session, check_version=False)
    try:
        every = lister.hosts()
        if hosts is not None:
            wanted = set(lister.host_ref(h) for h in hosts)
            every = [h for h in every if h[0] in wanted]
        shared_lock = threading.Lock()
        local = threading.local()
        sessions: List[Any] = []
        sessions_lock = threading.Lock()

        def worker_client() -> VifRulesClient:
            client = getattr(local, "client", None)
            if client is None:
                if session_factory is not None:
                    worker_session = session_factory()
                    with sessions_lock:
                        sessions.append(worker_session)
                else:
                    worker_session = _LockedSession(session, shared_lock)
                client = VifRulesClient(worker_session, check_version=check_version)
                local.client = client
            return client

        def one(entry: Tuple[str, str, str]) -> HostAudit:
            ref, name, uuid = entry
            result = HostAudit(ref, name, uuid)
            begin = time.monotonic()
            try:
                client = worker_client()
                client._host_names[ref] = name
                if check_version:
                    result.api_version = client.version(ref).api_version
                status = client.call(ref, "status", {})
                result.protected = bool(status.get("protected"))
                result.vifs = len(status.get("vifs") or [])
                result.missing = [str(m) for m in status.get("missing") or []]
                if sync:
                    result.sync = client.call(ref, "sync", {})
                result.state = "ok" if result.protected else "not protected"
            except VifRulesClientError as exc:
                if exc.host is None:
                    exc.host = name
                result.error = exc
                result.state = "error"
            except Exception as exc:   # a bug must not lose the other hosts
                result.error = VifRulesClientError(
                    "%s: %s" % (type(exc).__name__, exc),
                    code="VIF_RULES_CLIENT_INTERNAL_ERROR", host=name)
                result.state = "error"
            result.seconds = time.monotonic() - begin
            return result

        results: List[HostAudit] = []
        total = len(every)
        if total:
            workers = max(1, min(int(max_workers), total))
            with ThreadPoolExecutor(max_workers=workers,
                                    thread_name_prefix="vif-rules-audit") as pool:
                futures = [pool.submit(one, entry) for entry in every]
                for done, future in enumerate(as_completed(futures), 1):
                    result = future.result()
                    results.append(result)
                    if report is not None:
                        report(done, total, result)
        for worker_session in sessions:
            _logout(worker_session)
    finally:
        for own in owned:
            _logout(own)
    results.sort(key=lambda h: (h.host_name, h.host_uuid))
    return AuditSummary(results, sync, time.monotonic() - started)


__all__ = ["PLUGIN", "SUPPORTED_API_MAJORS", "Connection", "VifRulesClient",
           "VmInfo", "VifInfo", "VmResult", "VersionInfo", "HostAudit",
           "AuditSummary", "audit", "session_factory_from", "xapi_call"]

if sys.version_info < (3, 8):   # pragma: no cover
    raise ImportError("vif-rules-client needs Python 3.8 or newer")
