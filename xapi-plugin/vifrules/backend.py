"""Which network backend this host runs, and the engine for it.

XenServer decides it as here: /etc/xensource/network.conf says 'bridge' or
'openvswitch' ('vswitch' on older releases); from 6.5 a XenServer host (its
inventory file present) without network.conf runs Open vSwitch when the
kernel module is loaded. Anything else is a plain Linux bridge host. The
configuration key BACKEND (auto, bridge, openvswitch) overrides the detection.
"""

from vifrules import fs

from vifrules.errors import ConfigError

BRIDGE, OPENVSWITCH, AUTO = "bridge", "openvswitch", "auto"
CHOICES = (AUTO, BRIDGE, OPENVSWITCH)
OVS_MODULE = "/sys/module/openvswitch"
_NAMES = {"bridge": BRIDGE, "openvswitch": OPENVSWITCH, "vswitch": OPENVSWITCH}


def _read(path):
    try:
        handle = open(path)
    except IOError:
        return None
    try:
        return handle.read().strip()
    finally:
        handle.close()


def detect(cfg, root="/"):
    """(backend, how it was told): BRIDGE or OPENVSWITCH, or (None, why)."""
    path = cfg.get("XENSOURCE_NETWORK_CONF")
    text = _read(_under(root, path))
    if text is not None:
        if text in _NAMES:
            return _NAMES[text], "%s says %s" % (path, text)
        return None, "unrecognised backend %r in %s" % (text, path)
    inventory = cfg.get("XENSOURCE_INVENTORY")
    if fs.exists(_under(root, inventory)) and fs.isdir(_under(root, OVS_MODULE)):
        return OPENVSWITCH, "no %s; %s is loaded" % (path, OVS_MODULE)
    return BRIDGE, "no %s, and no %s with %s" % (path, inventory, OVS_MODULE)


def _under(root, path):
    if not root or root == "/":
        return path
    return fs.join(root, path.lstrip("/"))


def chosen(cfg, root="/"):
    """(backend, how it was told), the configuration first."""
    wanted = cfg.get("BACKEND")
    if wanted not in CHOICES:
        raise ConfigError(cfg.path or "-", "BACKEND",
                          "expected one of %s, not %r" % (", ".join(CHOICES), wanted))
    if wanted != AUTO:
        return wanted, "BACKEND=%s in the configuration" % wanted
    return detect(cfg, root)


def engine_for(cfg, log=None, log_error=None):
    """engine.Engine on a bridge host, ovs.OvsEngine on an Open vSwitch host
    (imported only then: the vif hook must start fast)."""
    return _maker(chosen(cfg)[0], cfg, log, log_error)()


def _maker(backend, cfg, log, log_error):
    """A function that imports and builds the backend's engine."""
    def make():
        if backend == OPENVSWITCH:
            from vifrules.ovs import OvsEngine
            return OvsEngine(cfg, log, log_error)
        from vifrules.engine import Engine
        return Engine(cfg, log, log_error)
    return make


def vif_event(cfg, vif, nic=None, log=None, log_error=None):
    """One VIF event as the hook runs it: apply nic to vif, or tear vif
    down (nic None). The change is handed over (vifrules.handover) and the
    engine loaded only if this caller commits: in a boot storm most
    callers' changes are committed by another."""
    from vifrules import handover
    if nic is None:
        change = handover.Change(handover.TEARDOWN, vif)
    else:
        change = handover.Change(handover.APPLY, vif, nic)
    return handover.submit(cfg, change, _maker(chosen(cfg)[0], cfg, log, log_error))
