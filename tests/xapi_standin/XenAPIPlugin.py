"""Test stand-in for dom0's XenAPIPlugin module.

XAPI runs a plugin with one argument: an XML-RPC methodCall whose method
is the plugin function and whose params are (session_ref, args_struct).
The plugin answers on stdout with an XML-RPC methodResponse holding
{"Status": "Success", "Value": ...} or
{"Status": "Failure", "ErrorDescription": [code, param, ...]}.

This module follows the protocol of the XenAPIPlugin.py shipped in dom0
(written from its documented behaviour):

- Failure(code, params) -> ErrorDescription [code] + params
- an unknown function -> UNKNOWN_XENAPI_PLUGIN_FUNCTION [fn]
- any other exception -> XENAPI_PLUGIN_FAILURE [fn, exception class, str(exc)]
- SystemExit is not caught.

The session handed to each function is usable like XenAPI.xapi_local()
logged in with the caller's session ref: session.xenapi.VM.get_domid(ref).
It talks to the stand-in server over the unix socket named by the
environment variable XAPI_STANDIN_SOCKET (default /var/lib/xcp/xapi).

Valid Python 2.4 through 3.x: no with, no "except E as e", no conditional
expressions, no print, no bytes literals, no str.format.
"""

import os
import socket
import sys

try:
    import xmlrpclib
except ImportError:
    import xmlrpc.client as xmlrpclib

DEFAULT_SOCKET = "/var/lib/xcp/xapi"
SOCKET_TIMEOUT = 120


class Failure(Exception):
    """A plugin error: reaches the remote caller as [code] + params."""

    def __init__(self, code, params):
        Exception.__init__(self)
        self.params = [code] + list(params)

    def __str__(self):
        return str(self.params)


class SessionFailure(Exception):
    """Raised by the fallback session on a XAPI Failure (like XenAPI.Failure)."""

    def __init__(self, details):
        Exception.__init__(self)
        self.details = details

    def __str__(self):
        return str(self.details)


def socket_path():
    return os.environ.get("XAPI_STANDIN_SOCKET", DEFAULT_SOCKET)


def _to_bytes(text):
    if sys.version_info[0] >= 3:
        if isinstance(text, str):
            return text.encode("utf-8")
        return text
    if isinstance(text, unicode):  # noqa: F821 (py2 only)
        return text.encode("utf-8")
    return text


def _to_text(data):
    if sys.version_info[0] >= 3:
        return data.decode("utf-8", "replace")
    return data


def _uds_xmlrpc(path, methodname, params):
    """One XML-RPC call as HTTP/1.0 POST over the unix socket at path."""
    body = _to_bytes(xmlrpclib.dumps(tuple(params), methodname, allow_none=True))
    head = ("POST / HTTP/1.0\r\n"
            "Host: localhost\r\n"
            "User-Agent: XenAPIPlugin-standin\r\n"
            "Content-Type: text/xml\r\n"
            "Content-Length: %d\r\n"
            "\r\n") % len(body)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    chunks = []
    try:
        sock.settimeout(SOCKET_TIMEOUT)
        sock.connect(path)
        sock.sendall(_to_bytes(head) + body)
        while 1:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    finally:
        sock.close()
    raw = _to_text(_to_bytes("").join(chunks))
    sep = raw.find("\r\n\r\n")
    if sep < 0:
        raise IOError("malformed HTTP response from %s" % path)
    status_line = raw[:raw.find("\r\n")]
    parts = status_line.split(" ")
    if len(parts) < 2 or parts[1] != "200":
        raise IOError("HTTP error from %s: %s" % (path, status_line))
    result = xmlrpclib.loads(raw[sep + 4:])[0]
    return result[0]


class _Method:
    def __init__(self, send, name):
        self._send = send
        self._name = name

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if self._name is None:
            return _Method(self._send, name)
        return _Method(self._send, "%s.%s" % (self._name, name))

    def __call__(self, *args):
        return self._send(self._name, args)


class LocalSession:
    """Minimal stand-in for XenAPI.xapi_local() (used when the XenAPI
    module is not importable, e.g. under Python 2 in the tests)."""

    def __init__(self, path, session_ref):
        self._path = path
        self._session = session_ref

    def _request(self, methodname, params):
        if methodname.startswith("login") or \
                methodname.startswith("slave_local"):
            reply = _uds_xmlrpc(self._path, "session." + methodname, params)
            self._session = _value(reply)
            return None
        if methodname in ("logout", "session.logout"):
            reply = _uds_xmlrpc(self._path, "session.logout", (self._session,))
            self._session = None
            _value(reply)
            return None
        reply = _uds_xmlrpc(self._path, methodname,
                            (self._session,) + tuple(params))
        return _value(reply)

    def __getattr__(self, name):
        if name == "xenapi":
            return _Method(self._request, None)
        if name == "handle":
            return self._session
        raise AttributeError(name)


def _value(reply):
    if not isinstance(reply, dict) or "Status" not in reply:
        raise SessionFailure(["INTERNAL_ERROR", "no Status in response"])
    if reply["Status"] == "Success":
        return reply.get("Value")
    raise _failure_class()(reply.get("ErrorDescription", []))


def _failure_class():
    try:
        import XenAPI
        return XenAPI.Failure
    except ImportError:
        return SessionFailure


def local_session(session_ref):
    """A session usable like XenAPI.xapi_local() with session_ref set."""
    path = socket_path()
    XenAPI = None
    if path.find("_") < 0:
        # The XenAPI package maps the URL host back to the socket path by
        # turning '_' into '/'; paths with '_' need the fallback.
        try:
            import XenAPI
        except ImportError:
            XenAPI = None
    if XenAPI is not None and hasattr(XenAPI, "UDSTransport"):
        session = XenAPI.Session("http://" + path.replace("/", "_") + "/",
                                 transport=XenAPI.UDSTransport())
        session._session = session_ref
        return session
    return LocalSession(path, session_ref)


def success_message(result):
    # Like dom0: no allow_none, so a plugin returning None crashes.
    return xmlrpclib.dumps(({"Status": "Success", "Value": result},), "", True)


def failure_message(description):
    return xmlrpclib.dumps(({"Status": "Failure",
                             "ErrorDescription": description},), "", True)


def _emit(text):
    sys.stdout.write(text)
    sys.stdout.write("\n")
    sys.stdout.flush()


def dispatch(fn_table):
    if len(sys.argv) != 2:
        raise Exception("Incorrect number of commandline arguments")
    params, methodname = xmlrpclib.loads(sys.argv[1])
    session_ref = params[0]
    args = params[1]
    if methodname not in fn_table:
        _emit(failure_message(["UNKNOWN_XENAPI_PLUGIN_FUNCTION", methodname]))
        return
    session = local_session(session_ref)
    try:
        result = fn_table[methodname](session, args)
    except SystemExit:
        raise
    except Failure:
        _emit(failure_message(sys.exc_info()[1].params))
        return
    except Exception:
        exc = sys.exc_info()[1]
        _emit(failure_message(["XENAPI_PLUGIN_FAILURE", methodname,
                               exc.__class__.__name__, str(exc)]))
        return
    _emit(success_message(result))
