"""Where a website source may send requests: its own hosts, over http(s), on public addresses.

The hosts are those of the source's own URLs (`url_prefix`, `start_url`, `sitemap_url`); every
request, each redirect hop included, must go to one of them. Addresses that are not public
(loopback, link-local such as 169.254.169.254 and fe80::/10, private, shared, reserved,
multicast) are refused, unless one of the source's own hosts is on such addresses only: an
intranet site or a loopback test server reaches its own hosts as usual. Names are resolved again
for every request, so a host that starts resolving to 169.254.169.254 mid-crawl is refused then
(the HTTP client resolves once more when it connects: a rebinding in between is not caught).
"""

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

Resolver = Callable[[str], list[str]]  # host name -> its addresses


def resolve(host: str) -> list[str]:
    """The addresses a host name resolves to (empty when it does not resolve)."""
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except (OSError, UnicodeError):
        return []


def is_public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class Scope:
    """Checks one URL at a time; `refusal(url)` is empty when the URL may be requested."""

    def __init__(self, own_urls: list[str], *, resolver: Resolver = resolve):
        self.hosts = {h for h in (urlsplit(u).hostname for u in own_urls if u) if h}
        self._resolver = resolver
        self.private_ok = any(
            (found := self._resolve(h)) and not any(is_public(a) for a in found) for h in self.hosts
        )

    def _resolve(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            return self._resolver(host)

    def refusal(self, url: str) -> str:
        """Why `url` may not be requested ("" when it may)."""
        split = urlsplit(url)
        if split.scheme not in ("http", "https"):
            return f"scheme {split.scheme or '(none)'!r} is not http(s)"
        host = split.hostname or ""
        if host not in self.hosts:
            return f"host {host!r} is not one of the source's own ({', '.join(sorted(self.hosts))})"
        if not self.private_ok:
            private = [a for a in self._resolve(host) if not is_public(a)]
            if private:
                return f"host {host!r} resolves to the non-public address {private[0]}"
        return ""
