"""Outbound connections: what a peer address is, and which addresses may be dialled.

Anything this node connects to because someone on the network named it (a peer URL
in a ``peers`` message or a ``hello``, a handle's domain to confirm) goes through
this module. It answers two questions, and refuses everything else:

**Is this a peer address?** A peer address is a scheme (``http`` or ``https``), a
host and a port, nothing more: :meth:`PeerAddress.from_str` refuses userinfo
(``user@``), a path other than ``/``, a query, a fragment (even an empty ``?`` or
``#``), other schemes, ports outside 1-65535, hosts over 253 characters or with
labels over 63, non-ASCII or otherwise odd host names, and any text over
:data:`MAX_ADDRESS_LENGTH`. What it keeps is normalized (lower case, default port
dropped, IPv6 in brackets), so one node has one spelling and a URL learned from the
network is never dialled or passed on as it was given.

**May this node connect there?** :class:`DialPolicy` sorts every IP address into a
class (:func:`address_class`):

- ``public``: globally routable;
- ``private``: 10/8, 172.16/12, 192.168/16, 100.64/10 (carrier NAT), fc00::/7;
- ``loopback``: 127/8, ::1;
- ``forbidden``: link-local (169.254/16, where cloud metadata lives; fe80::/10),
  multicast, unspecified, broadcast, reserved and documentation ranges, Teredo.
  Never dialled under any level, only by an explicit ``allow`` network.

IPv4 inside IPv6 (``::ffff:a.b.c.d``, 6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``) is
judged as the IPv4 address it carries. The policy's level says which classes may be
dialled, each level widening the one before: ``"public"`` (the default: a node on
the internet dials only public addresses), ``"private"`` (also private ranges, for a
node on a LAN) and ``"loopback"`` (also loopback, for a local harness or tests).
``allow`` lists extra networks (CIDR) that may be dialled whatever their class. A
port below 1024 is refused unless it is 80 or 443, so a learned address cannot aim
the node's HTTP at SMTP, SSH and the like.

The check is made on the address actually connected to, after DNS resolution, by
the socket factory of the connector that :meth:`DialPolicy.session` builds: a host
name that resolves to a forbidden address is refused, and since the check and the
connect are the same step, a name whose DNS answer changes between a check and a
connect (DNS rebinding) gains nothing. Redirects are covered the same way: every
connection the session opens passes the check.

Public API for other code that fetches a URL it did not choose (for instance a
handle's ``/.well-known/atproto-did``)::

    policy = DialPolicy.from_config(node.config)
    async with policy.session() as http:           # every connect is checked
        async with http.get(url) as resp: ...       # DialRefused (an OSError,
                                                    # so aiohttp.ClientConnectorError)
    policy.permits_url(url)   # a quick check of a literal address before any DNS

Addresses the operator names itself (``peers`` in the config, ``--peer``) are the
operator's choice and are dialled whatever their class (they are still normalized).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import aiohttp

if TYPE_CHECKING:
    from ..config import NodeConfig

__all__ = [
    "DIAL_LEVELS",
    "MAX_ADDRESS_LENGTH",
    "AddressError",
    "DialLevel",
    "DialPolicy",
    "DialRefused",
    "PeerAddress",
    "address_class",
    "normalize_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DialLevel = Literal["public", "private", "loopback"]
AddressClass = Literal["public", "private", "loopback", "forbidden"]

#: The levels of :class:`DialPolicy`, narrowest first; each allows these classes.
DIAL_LEVELS: Final[dict[str, frozenset[str]]] = {
    "public": frozenset({"public"}),
    "private": frozenset({"public", "private"}),
    "loopback": frozenset({"public", "private", "loopback"}),
}
#: Longest peer address accepted, in characters (scheme, a 253-character host, port).
MAX_ADDRESS_LENGTH: Final = 300
_MAX_HOST = 253
_SCHEMES: Final = {"http": 80, "https": 443}
_LOW_PORTS_ALLOWED: Final = frozenset({80, 443})

_PRIVATE: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# scheme://host[:port][/] and nothing else: no userinfo, query, fragment or path.
_ADDRESS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?/?"
)


class AddressError(ValueError):
    """Not a peer address (see :meth:`PeerAddress.from_str`)."""


class DialRefused(OSError):
    """The dial policy refuses this destination. An :class:`OSError`, so a refused
    connect surfaces from aiohttp as :class:`aiohttp.ClientConnectorError` like any
    other failure to connect."""


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """A peer's address: scheme, host and port. ``host`` is lower case; an IPv6
    literal is kept without brackets."""

    scheme: str
    host: str
    port: int

    @classmethod
    def from_str(cls, text: str) -> PeerAddress:
        """Parse and normalize; raises :class:`AddressError` for anything that is not
        exactly scheme, host and optional port (a trailing ``/`` is forgiven)."""
        if not isinstance(text, str) or len(text) > MAX_ADDRESS_LENGTH:
            raise AddressError("a peer address is a string of at most 300 characters")
        m = _ADDRESS.fullmatch(text)
        if m is None:
            raise AddressError(
                "a peer address is scheme://host[:port] only (no user, path, query or fragment)"
            )
        scheme = m["scheme"].lower()
        if scheme not in _SCHEMES:
            raise AddressError(f"scheme {scheme!r}: a peer is reached over http or https")
        port = _SCHEMES[scheme] if m["port"] is None else int(m["port"])
        if not 1 <= port <= 65535:
            raise AddressError(f"port {port} is out of range")
        return cls(scheme, _normalize_host(m["host"]), port)

    @property
    def ip(self) -> IPAddress | None:
        """The host as an IP address, or None for a host name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def to_str(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == _SCHEMES[self.scheme]:
            return f"{self.scheme}://{host}"
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.to_str()


def normalize_url(text: str) -> str:
    """``PeerAddress.from_str(text).to_str()``: raises :class:`AddressError`."""
    return PeerAddress.from_str(text).to_str()


def _normalize_host(raw: str) -> str:
    if raw.startswith("["):
        try:
            ip6 = ipaddress.IPv6Address(raw[1:-1])
        except ValueError:
            raise AddressError(f"{raw!r} is not an IPv6 address") from None
        return str(ip6)
    host = raw.lower()
    if host.endswith("."):
        host = host[:-1]  # the root label: "a.example." is "a.example"
    if not host or len(host) > _MAX_HOST:
        raise AddressError(f"a host name is 1 to {_MAX_HOST} characters")
    labels = host.split(".")
    if all(label.isdigit() for label in labels):
        try:
            return str(ipaddress.IPv4Address(host))  # only dotted-quad, never "2130706433"
        except ValueError:
            raise AddressError(f"{raw!r} is not an IPv4 address") from None
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise AddressError(f"{raw!r} is not a host name (letters, digits, '-', 63 per label)")
    if labels[-1].isdigit():
        raise AddressError(f"{raw!r}: a host name's last label is not a number")
    return host


def address_class(ip: IPAddress) -> AddressClass:
    """Which class of destination ``ip`` is (see the module docstring)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return address_class(embedded)
        if ip.teredo is not None:
            return "forbidden"
    if ip.is_multicast or ip.is_unspecified or ip.is_link_local:
        return "forbidden"
    if ip.is_loopback:
        return "loopback"
    if any(ip in net for net in _PRIVATE):
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "forbidden"
    return "public"


@dataclass(frozen=True, slots=True)
class DialPolicy:
    """Which destinations outbound connections may reach: a ``level`` (``"public"``,
    ``"private"`` or ``"loopback"``, see :data:`DIAL_LEVELS`) and extra ``allow``
    networks. The default is the safe one: public addresses only."""

    level: DialLevel = "public"
    allow: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        if self.level not in DIAL_LEVELS:
            raise ValueError(f"dial_policy must be one of {', '.join(DIAL_LEVELS)}")

    @classmethod
    def from_settings(cls, level: str, allow: Iterable[str] = ()) -> DialPolicy:
        """From config values; raises ValueError for an unknown level or a bad network."""
        if level not in DIAL_LEVELS:
            raise ValueError(f"dial_policy must be one of {', '.join(DIAL_LEVELS)}, not {level!r}")
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in allow)
        return cls(level, nets)  # type: ignore[arg-type]

    @classmethod
    def from_config(cls, config: NodeConfig) -> DialPolicy:
        return cls.from_settings(config.dial_policy, config.dial_allow)

    def permits(self, ip: IPAddress | str, port: int) -> bool:
        """May a connection go to ``ip`` port ``port``?"""
        if isinstance(ip, str):
            try:
                ip = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone
            except ValueError:
                return False
        if not 1 <= port <= 65535 or (port < 1024 and port not in _LOW_PORTS_ALLOWED):
            return False
        if any(ip.version == net.version and ip in net for net in self.allow):
            return not (ip.is_unspecified or ip.is_multicast)
        return address_class(ip) in DIAL_LEVELS[self.level]

    def permits_url(self, url: str | PeerAddress) -> bool:
        """A check before any DNS: False for something that is not a peer address, a
        refused port, or a literal IP the policy refuses; True for an acceptable host
        name (which is checked again, after resolution, when connected to)."""
        try:
            addr = url if isinstance(url, PeerAddress) else PeerAddress.from_str(url)
        except AddressError:
            return False
        ip = addr.ip
        if ip is None:
            return self.permits(ipaddress.IPv4Address("8.8.8.8"), addr.port)  # the port alone
        return self.permits(ip, addr.port)

    def socket_factory(self, addr_info: Any) -> socket.socket:
        """An aiohappyeyeballs socket factory: refuses (DialRefused) a destination the
        policy does not permit, right before connecting to it."""
        family, type_, proto, _, sockaddr = addr_info
        host, port = sockaddr[0], sockaddr[1]
        if not self.permits(host, port):
            raise DialRefused(f"dial policy {self.level!r} refuses {host} port {port}")
        return socket.socket(family=family, type=type_, proto=proto)

    def connector(self, **kwargs: Any) -> aiohttp.TCPConnector:
        """A connector whose every connection passes :meth:`permits` (after DNS)."""
        return aiohttp.TCPConnector(socket_factory=self.socket_factory, **kwargs)

    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        """A client session under this policy (the caller closes it). No proxies from
        the environment: a proxy would be the only address checked."""
        return aiohttp.ClientSession(connector=self.connector(), trust_env=False, **kwargs)
