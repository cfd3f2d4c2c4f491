"""Where a website source may send requests: its own origins, on public addresses.

An origin is a scheme, a host and a port (http://h and http://h:80 are one origin; http://h:2379
is another, and so is https://h). The origins are those of the source's own URLs (`url_prefix`,
`start_url`, `sitemap_url`); every request, each redirect hop, sitemap child and robots.txt
included, must go to one of them. So a source cannot be led to another service of its own host
(an etcd on :2379, an admin port) by a link, a redirect or a sitemap. Addresses that are not public
(loopback, link-local such as 169.254.169.254 and fe80::/10, private, shared, reserved,
multicast) are refused, unless one of the source's own hosts is on such addresses only: an
intranet site or a loopback test server reaches its own origins as usual. Names are resolved again
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


DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]  # scheme, host (lower case, IPv6 without brackets), port


def origin(url: str) -> Origin | None:
    """The origin of an http(s) URL, its default port written out; None for another scheme or a
    URL with no host or an invalid port."""
    split = urlsplit(url)
    scheme = split.scheme.lower()
    try:
        port = split.port
    except ValueError:  # not a number, or out of range
        return None
    if scheme not in DEFAULT_PORTS or not split.hostname:
        return None
    return scheme, split.hostname, port or DEFAULT_PORTS[scheme]


def show(found: Origin) -> str:
    scheme, host, port = found
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if port == DEFAULT_PORTS[scheme] else f":{port}")


class Scope:
    """Checks one URL at a time; `refusal(url)` is empty when the URL may be requested."""

    def __init__(self, own_urls: list[str], *, resolver: Resolver = resolve):
        self.origins = {found for found in map(origin, filter(None, own_urls)) if found}
        self.hosts = {host for _, host, _ in self.origins}
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
        if split.scheme.lower() not in DEFAULT_PORTS:
            return f"scheme {split.scheme or '(none)'!r} is not http(s)"
        found = origin(url)
        if found is None:
            return f"{url!r} has no host or an invalid port"
        if found not in self.origins:
            own = ", ".join(sorted(map(show, self.origins)))
            return f"origin {show(found)!r} is not one of the source's own ({own})"
        if not self.private_ok:
            private = [a for a in self._resolve(found[1]) if not is_public(a)]
            if private:
                return f"host {found[1]!r} resolves to the non-public address {private[0]}"
        return ""
