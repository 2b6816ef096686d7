"""Strict parsing of the data that names a guest's interface and addresses.

Everything here is pure and returns canonical text, so the same input always
yields byte-identical rules.
"""

from vifrules import jsontext
from vifrules.compat import current_exception, string_types
from vifrules.errors import InvalidArgument
from vifrules.lexical import DIGITS, HEX_DIGITS, LETTERS, decimal, only

MAX_DOMID = 32752  # DOMID_FIRST_RESERVED: higher ids are never guests
MAX_IPV4 = 64  # per VIF: bounds the size of one rule batch
# The neighbour-advertisement guard ANDs one u32 match per own IPv6 address
# into one rule, and ip6tables refuses such a rule beyond about 30 matches.
MAX_IPV6 = 16

_IFACE_FIRST = LETTERS + DIGITS + "_"
_IFACE_CHARS = _IFACE_FIRST + ".:"

# Keys Nova writes into vm-data/networking/<mac>; anything else is refused.
NIC_KEYS = ("label", "mac", "ips", "ip6s", "gateway", "gateway_v6", "dns",
            "routes", "broadcast", "mtu", "dhcp_server", "vm_id", "vif_uuid")
ADDRESS_KEYS = ("ip", "netmask", "enabled", "gateway")


def _require_text(name, value):
    if not isinstance(value, string_types):
        raise InvalidArgument(name, value, "must be a string")
    try:
        value = str(value)
    except UnicodeError:
        raise InvalidArgument(name, value, "must be ASCII")
    # Python 3 takes non-ASCII into str() too (and splits on its spaces):
    # one answer on every Python.
    for char in value:
        if not " " <= char <= "~":
            raise InvalidArgument(name, value, "must be printable ASCII")
    if value.startswith("-"):
        raise InvalidArgument(name, value, "must not begin with '-'")
    return value


class VifName(object):
    """vif<domid>.<devid> or tap<domid>.<devid>, nothing else. An event
    parses the name of every VIF on record: a str goes straight to the
    checks, anything else through _require_text first."""

    def __init__(self, name):
        if type(name) is not str:
            name = _require_text("vif", name)
        kind, numbers = name[:3], name[3:].split(".")
        domid = devid = ""
        if len(numbers) == 2:
            domid, devid = numbers
        # Checked inline, the numbers kept: an event parses the name of
        # every guest on record, then sorts and marks them by number. The
        # text must be exactly what int() prints back: no sign, space or
        # leading zero.
        try:
            self.domid_number, self.devid_number = int(domid), int(devid)
        except (ValueError, UnicodeError):
            self.domid_number = self.devid_number = -1
        if not ((kind == "vif" or kind == "tap") and 0 < self.domid_number < 100000 and
                0 <= self.devid_number < 10000 and str(self.domid_number) == domid and
                str(self.devid_number) == devid):
            raise InvalidArgument("vif", name,
                                  "expected vif<domid>.<devid> or tap<domid>.<devid>")
        if self.domid_number > MAX_DOMID:
            raise InvalidArgument("vif", name, "domid above %d" % MAX_DOMID)
        self.kind, self.domid, self.devid, self.name = kind, domid, devid, name

    def __str__(self):
        return self.name

    def __repr__(self):
        return "VifName(%r)" % self.name


def parse_interface(name):
    """A host interface (an uplink): a kernel name, never a guest port."""
    name = _require_text("interface", name)
    if len(name) > 15 or not only(name[:1], _IFACE_FIRST) or \
            not (len(name) == 1 or only(name[1:], _IFACE_CHARS)):
        raise InvalidArgument("interface", name, "not a valid interface name")
    if name.startswith("vif") or name.startswith("tap"):
        raise InvalidArgument("interface", name, "a guest port cannot be trusted")
    return name


def parse_interface_list(text):
    """'eth0, eth1' or 'eth0 eth1' -> ['eth0', 'eth1'] (order kept, no repeats)."""
    text = _require_text("trusted", text)
    result = []
    for item in text.replace(",", " ").split():
        if item and item not in result:
            result.append(parse_interface(item))
    return result


def parse_mac(value, name="mac"):
    value = _require_text(name, value)
    pairs = value.split(":")
    if len(pairs) != 6 or [p for p in pairs if len(p) != 2 or not only(p, HEX_DIGITS)]:
        raise InvalidArgument(name, value, "expected six hex pairs separated by ':'")
    value = value.lower()
    first = int(value[:2], 16)
    if first & 1:
        raise InvalidArgument(name, value, "a multicast MAC cannot be a guest's")
    if value == "00:00:00:00:00:00":
        raise InvalidArgument(name, value, "the zero MAC cannot be a guest's")
    return value


def _octets(text):
    """Four decimal octets without leading zeros (which some read as octal)."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    for part in parts:
        if not decimal(part, 3) or int(part) > 255:
            return None
    return [int(part) for part in parts]


def parse_ipv4(value, name="ip"):
    value = _require_text(name, value)
    octets = _octets(value)
    if octets is None:
        raise InvalidArgument(name, value, "not a dotted-quad IPv4 address")
    if octets[0] == 0 or octets[0] == 127 or octets[0] >= 224:
        raise InvalidArgument(name, value,
                              "unspecified, loopback, multicast or reserved")
    return ".".join([str(o) for o in octets])


def ipv6_to_words(value, name="ip"):
    """Eight 16-bit integers, or InvalidArgument. Accepts a trailing IPv4."""
    value = _require_text(name, value)
    if value.count("::") > 1 or ":::" in value:
        raise InvalidArgument(name, value, "not an IPv6 address")
    tail = []
    head_text = value
    if "." in value:
        last_colon = value.rfind(":")
        v4 = _octets(value[last_colon + 1:])
        if v4 is None:
            raise InvalidArgument(name, value, "not an IPv6 address")
        tail = [(v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]]
        head_text = value[:last_colon + 1]
        if head_text.endswith(":") and not head_text.endswith("::"):
            head_text = head_text[:-1]
    if "::" in head_text:
        left, right = head_text.split("::")
        left_words = _hextets(left, name, value)
        right_words = _hextets(right, name, value)
        missing = 8 - len(left_words) - len(right_words) - len(tail)
        if missing < 1:
            raise InvalidArgument(name, value, "not an IPv6 address")
        words = left_words + [0] * missing + right_words + tail
    else:
        words = _hextets(head_text, name, value) + tail
    if len(words) != 8:
        raise InvalidArgument(name, value, "not an IPv6 address")
    return words


def _hextets(text, name, whole):
    if text == "":
        return []
    words = []
    for part in text.split(":"):
        if len(part) > 4 or not only(part, HEX_DIGITS):
            raise InvalidArgument(name, whole, "not an IPv6 address")
        words.append(int(part, 16))
    return words


def format_ipv6(words):
    """RFC 5952 text: lower case, longest run of two or more zeros as '::'."""
    best_start, best_len = -1, 0
    i = 0
    while i < 8:
        if words[i] == 0:
            j = i
            while j < 8 and words[j] == 0:
                j += 1
            if j - i > best_len and j - i >= 2:
                best_start, best_len = i, j - i
            i = j
        else:
            i += 1
    hexes = ["%x" % w for w in words]
    if best_start < 0:
        return ":".join(hexes)
    left = ":".join(hexes[:best_start])
    right = ":".join(hexes[best_start + best_len:])
    return left + "::" + right


def parse_ipv6(value, name="ip6"):
    words = ipv6_to_words(value, name)
    if words[0] >> 8 == 0xff:
        raise InvalidArgument(name, value, "a multicast address cannot be a guest's")
    if words[:7] == [0] * 7 and words[7] in (0, 1):
        raise InvalidArgument(name, value, "unspecified or loopback")
    return format_ipv6(words)


def link_local_from_mac(mac):
    """fe80::/64 with the modified EUI-64 of the MAC (RFC 4291 appendix A)."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] = octets[0] ^ 0x02
    eui = octets[:3] + [0xff, 0xfe] + octets[3:]
    words = [0xfe80, 0, 0, 0]
    for i in range(0, 8, 2):
        words.append((eui[i] << 8) | eui[i + 1])
    return format_ipv6(words)


def solicited_node(address):
    """ff02::1:ffXX:XXXX for one unicast IPv6 address."""
    words = ipv6_to_words(address)
    return format_ipv6([0xff02, 0, 0, 0, 0, 1, 0xff00 | (words[6] & 0xff), words[7]])


class NicAddresses(object):
    """One guest NIC: its MAC and the addresses the cloud gave it."""

    def __init__(self, mac, ipv4, ipv6):
        self.mac = mac
        self.ipv4 = list(ipv4)
        self.ipv6 = list(ipv6)

    def to_dict(self):
        return {"mac": self.mac, "ipv4": self.ipv4, "ipv6": self.ipv6}

    def __eq__(self, other):
        return isinstance(other, NicAddresses) and self.to_dict() == other.to_dict()

    def __ne__(self, other):
        return not self.__eq__(other)


def _enabled_addresses(entries, key, parse, limit, limit_name):
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InvalidArgument(key, entries, "must be a list")
    result = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise InvalidArgument(key, entry, "each entry must be an object")
        for entry_key in entry.keys():
            if entry_key not in ADDRESS_KEYS:
                raise InvalidArgument(key, entry_key, "unknown key")
        if "ip" not in entry:
            raise InvalidArgument(key, entry, "entry has no 'ip'")
        address = parse(entry["ip"], key)
        if entry.get("enabled") != "1":
            continue
        if address not in result:
            result.append(address)
    if len(result) > limit:
        raise InvalidArgument(key, str(len(result)),
                              "more than %d %s addresses" % (limit, limit_name))
    return result


def parse_nic(data):
    """Nova's per-NIC networking object (a dict or its JSON) -> NicAddresses."""
    if isinstance(data, string_types):
        text = data
        try:
            data = jsontext.loads(text)
        except ValueError:
            raise InvalidArgument("network", text, "not valid JSON: %s" % current_exception())
    if not isinstance(data, dict):
        raise InvalidArgument("network", data, "must be a JSON object")
    for key in data.keys():
        if key not in NIC_KEYS:
            raise InvalidArgument("network", key, "unknown key")
    if "mac" not in data:
        raise InvalidArgument("network", "mac", "missing")
    mac = parse_mac(data["mac"])
    ipv4 = _enabled_addresses(data.get("ips"), "ips", parse_ipv4, MAX_IPV4, "IPv4")
    ipv6 = _enabled_addresses(data.get("ip6s"), "ip6s", parse_ipv6, MAX_IPV6, "IPv6")
    return NicAddresses(mac, ipv4, ipv6)


def nic_from_state(data):
    """The stored form (to_dict) back to NicAddresses, validated again."""
    if not isinstance(data, dict):
        raise InvalidArgument("state", data, "must be an object")
    mac = parse_mac(data.get("mac"))
    ipv4 = [parse_ipv4(a) for a in data.get("ipv4", [])]
    ipv6 = [parse_ipv6(a) for a in data.get("ipv6", [])]
    return NicAddresses(mac, ipv4, ipv6)

