"""Where a VIF's addresses come from: the VM record, read through XAPI.

Never from /local/domain/<domid>/vm-data: since XenServer 6 the guest can
write there. Nova keeps each NIC's data in the VM's xenstore_data under
vm-data/networking/<MAC without colons>, which only the toolstack sets.
"""

import os
import re
import sys

from vifrules.addresses import VifName, parse_mac, parse_nic
from vifrules.compat import current_exception
from vifrules.errors import HostNotReady, InvalidArgument, NoNetworkData, XapiError

NETWORKING_PREFIX = "vm-data/networking/"
_INVENTORY_LINE = re.compile(r"^([A-Z_]+)=['\"]?([^'\"]*)['\"]?\s*\Z")


def call(what, function, *args):
    """Run one XAPI call; its Failure becomes XapiError(call, details)."""
    try:
        return function(*args)
    except Exception:
        error = current_exception()
        details = getattr(error, "details", None)
        if details is None:
            raise XapiError(what, str(error))
        raise XapiError(what, " ".join([str(d) for d in details]))


def read_inventory(path):
    values = {}
    try:
        handle = open(path)
    except IOError:
        raise HostNotReady(path, "not a XenServer host: no inventory to name this host")
    try:
        for line in handle:
            match = _INVENTORY_LINE.match(line.strip())
            if match:
                values[match.group(1)] = match.group(2)
    finally:
        handle.close()
    return values


def this_host(session, cfg):
    uuid = read_inventory(cfg.get("XENSOURCE_INVENTORY")).get("INSTALLATION_UUID")
    if not uuid:
        raise HostNotReady(cfg.get("XENSOURCE_INVENTORY"), "has no INSTALLATION_UUID")
    return call("host.get_by_uuid", session.xenapi.host.get_by_uuid, uuid)


def _load_site_packages():
    """The vif hook starts with python -S; the XAPI SDK is in site-packages."""
    if "site" in sys.modules:
        return
    import site
    if sys.version_info[0] >= 3:  # Python 2 runs it on import
        site.main()


def local_session(cfg):
    """A session over dom0's local socket, as the vif hook needs one."""
    _load_site_packages()
    try:
        import XenAPI
    except ImportError:
        raise HostNotReady("XenAPI python module", "install the XenAPI SDK or pass --network")
    path = cfg.get("XAPI_SOCKET")
    if path == "/var/lib/xcp/xapi":
        session = XenAPI.xapi_local()
    else:
        session = XenAPI.Session("http://" + path.replace("/", "_"),
                                 transport=XenAPI.UDSTransport())
    call("session.login_with_password", session.xenapi.login_with_password,
         "root", "", "1.0", "vif-rules")
    return session


def logout(session):
    """Every hook run logs in: log out, or XAPI's session table fills up."""
    try:
        session.xenapi.session.logout()
    except Exception:
        pass


def _running_vms(session, host_ref, domid=None):
    expression = 'field "resident_on" = "%s" and field "power_state" = "Running"' % host_ref
    if domid is not None:
        expression = expression + ' and field "domid" = "%s"' % domid
    records = call("VM.get_all_records_where",
                   session.xenapi.VM.get_all_records_where, expression)
    return [(ref, record) for ref, record in records.items()
            if not record.get("is_control_domain")]


def _nic_text(vm_record, mac, vif_name):
    """The JSON Nova wrote for this MAC, or None."""
    wanted = NETWORKING_PREFIX + mac.replace(":", "")
    for key, value in (vm_record.get("xenstore_data") or {}).items():
        if key.lower() == wanted:
            return value
    return None


def _checked_nic(text, mac, vif_name):
    nic = parse_nic(text)
    if nic.mac != mac:
        raise InvalidArgument("network", nic.mac,
                              "the data is for another MAC than %s's %s" % (vif_name, mac))
    return nic


def nic_for_vif(session, cfg, vif):
    """NicAddresses of a running VIF, found through this host's VM records."""
    host = this_host(session, cfg)
    vms = _running_vms(session, host, vif.domid)
    if not vms:
        raise NoNetworkData(vif.name, "no running VM with domid %s on this host" % vif.domid)
    vm_ref, vm_record = vms[0]
    for vif_ref in vm_record.get("VIFs", []):
        record = call("VIF.get_record", session.xenapi.VIF.get_record, vif_ref)
        if str(record.get("device")) == vif.devid:
            mac = parse_mac(record.get("MAC", ""))
            text = _nic_text(vm_record, mac, vif.name)
            if text is None:
                raise NoNetworkData(vif.name, "VM %s has no %s%s" % (
                    vm_record.get("uuid"), NETWORKING_PREFIX, mac.replace(":", "")))
            return _checked_nic(text, mac, vif.name)
    raise NoNetworkData(vif.name, "VM %s has no VIF with device %s" % (
        vm_record.get("uuid"), vif.devid))


def running_vifs(session, cfg):
    """{name: (VifName, NicAddresses or None)} for every guest port that runs
    here: vif<domid>.<device>, and tap<domid>.<device> while it exists.
    A VIF whose data is missing or invalid maps to None (kept closed)."""
    host = this_host(session, cfg)
    sys_net = cfg.get("SYS_CLASS_NET")
    result = {}
    for vm_ref, vm_record in _running_vms(session, host):
        domid = str(vm_record.get("domid"))
        vif_records = call("VIF.get_all_records_where", session.xenapi.VIF.get_all_records_where,
                           'field "VM" = "%s"' % vm_ref)
        for record in vif_records.values():
            try:
                mac = parse_mac(record.get("MAC", ""))
            except InvalidArgument:
                continue
            for kind in ("vif", "tap"):
                try:
                    vif = VifName("%s%s.%s" % (kind, domid, record.get("device")))
                except InvalidArgument:
                    continue
                if not os.path.exists(os.path.join(sys_net, vif.name)):
                    continue
                nic = None
                text = _nic_text(vm_record, mac, vif.name)
                if text is not None:
                    try:
                        nic = _checked_nic(text, mac, vif.name)
                    except InvalidArgument:
                        nic = None
                result[vif.name] = (vif, nic)
    return result
