"""Rate limits per client: `SKINSERVE_RATE_LIMIT` in the notation of the `limits` library (`20/second`,
`1000/minute`, `5/second;100/minute`), kept per API key when keys are set, else per client address.

The counting is the `limits` library's moving window. Its storage is `SKINSERVE_RATE_LIMIT_STORAGE`: `memory://`
(the default) counts in each API worker process, so with N workers a client may get up to N times the limit; point
it at a shared store (`async+redis://host:6379`, with the `redis` package installed) to count across workers and
replicas. A forwarded-for header names the client only when the connection comes from a proxy listed in
`SKINSERVE_TRUSTED_PROXIES`; from anyone else it is a claim, and the connection's own address counts.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.requests import Request

from skinserve.errors import ClientError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimited(ClientError):
    """Over this client's rate limit: 429 with the seconds until its window has room again."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """Proxy addresses or CIDR blocks (`10.0.0.0/8`, `127.0.0.1`); a bad one raises ValueError naming it."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def client_address(request: Request, trusted_proxies: Sequence[Network]) -> str:
    """The connection's address, or the nearest untrusted address in X-Forwarded-For when it came via a trusted
    proxy (walking the header right to left, as each trusted proxy appended the address it saw)."""
    peer = request.client.host if request.client else "unknown"
    if not trusted_proxies or not _within(peer, trusted_proxies):
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


def _within(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


@dataclass
class RateLimiter:
    """`await check(client)` raises RateLimited when `client` is over any of the limits."""

    limits: str
    storage_uri: str = "memory://"

    def __post_init__(self) -> None:
        from limits import parse_many
        from limits.aio.strategies import MovingWindowRateLimiter
        from limits.storage import storage_from_string

        self._items = parse_many(self.limits)
        uri = self.storage_uri if self.storage_uri.startswith("async+") else f"async+{self.storage_uri}"
        self._limiter = MovingWindowRateLimiter(storage_from_string(uri))

    async def check(self, client: str) -> None:
        for item in self._items:
            if not await self._limiter.hit(item, "skinserve", client):
                stats = await self._limiter.get_window_stats(item, "skinserve", client)
                retry = max(1, math.ceil(stats.reset_time - time.time()))
                raise RateLimited(f"over the rate limit of {item}; retry in {retry} s", retry)


def validated_limits(text: str) -> str:
    """`text` when the `limits` library reads it, else ValueError with what was expected."""
    from limits import parse_many

    try:
        parse_many(text)
    except ValueError as err:
        raise ValueError(f"{text!r} is not a rate limit like '20/second' or '1000/minute;50/second'") from err
    return text
