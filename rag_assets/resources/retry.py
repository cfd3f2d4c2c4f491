"""One retry policy for every HTTP fetcher (GitHub, websites): what is transient, how long to wait.

Transient: connection failures and resets (httpx transport errors), 5xx, 429, and 403 that is a rate
limit (`retry-after`, or `x-ratelimit-remaining: 0`). Waits grow exponentially from `base_seconds`,
honour `retry-after` and `x-ratelimit-reset`, and never exceed `max_wait_seconds`: when the server
asks for a longer wait than that, waiting the cap and asking again would only be refused again, so
the call gives up at once and says until when. Messages name the request's URL without its query
and never a header, so a token can never end up in one.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx

DEFAULT_ATTEMPTS = 5
DEFAULT_BASE_SECONDS = 1.0
DEFAULT_MAX_WAIT_SECONDS = 60.0
TRANSIENT_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

T = TypeVar("T")


class RetryError(RuntimeError):
    """A request kept failing; `last` says how (e.g. 'HTTP 503' or 'ReadError: ...')."""

    def __init__(self, message: str, *, last: str):
        super().__init__(message)
        self.last = last


class RateLimitedError(RetryError):
    """The server refuses requests until `until` (UTC), further away than the policy waits."""

    def __init__(self, message: str, *, last: str, until: datetime):
        super().__init__(message, last=last)
        self.until = until


class TransientResponse(Exception):
    """Raised inside an attempt to hand a retryable response to the policy (used for streams)."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential back-off: at most `attempts` tries, waits capped at `max_wait_seconds`."""

    attempts: int = DEFAULT_ATTEMPTS
    base_seconds: float = DEFAULT_BASE_SECONDS
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_seconds < 0 or self.max_wait_seconds < 0:
            raise ValueError(f"invalid retry policy {self}")

    def with_attempts(self, attempts: int) -> "RetryPolicy":
        return replace(self, attempts=attempts)

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based) when the server gave no hint."""
        return min(self.base_seconds * 2 ** (attempt - 1), self.max_wait_seconds)

    def call(self, attempt: Callable[[], T], *, what: str, sleep: Callable[[float], None] = time.sleep) -> T:
        """Run `attempt` until it returns; retry transport errors and TransientResponse; else re-raise."""
        for number in range(1, self.attempts + 1):
            try:
                return attempt()
            except TRANSIENT_TRANSPORT_ERRORS as error:
                last, hint, url = f"{type(error).__name__}: {error}", None, _url_of(error)
            except TransientResponse as transient:
                response = transient.response
                last, hint, url = (
                    f"HTTP {response.status_code}",
                    server_wait(response),
                    _clean_url(response.request.url),
                )
            if hint is not None and hint > self.max_wait_seconds:
                until = datetime.fromtimestamp(time.time() + hint, UTC)
                raise RateLimitedError(
                    f"{what}: rate limited ({last} from {url}) until {until.isoformat(timespec='seconds')}, "
                    f"longer than the {self.max_wait_seconds:g} s this policy waits",
                    last=last,
                    until=until,
                )
            if number == self.attempts:
                raise RetryError(
                    f"{what}: gave up after {number} tries; last answer: {last} from {url}", last=last
                )
            sleep(self.backoff(number) if hint is None else max(hint, 0.0))
        raise AssertionError("unreachable")  # pragma: no cover

    def send(
        self, request: Callable[[], httpx.Response], *, what: str, sleep: Callable[[float], None] = time.sleep
    ) -> httpx.Response:
        """A request that is retried while its answer is transient; the final answer is returned as is."""

        def attempt() -> httpx.Response:
            response = request()
            if is_transient(response):
                response.read()
                raise TransientResponse(response)
            return response

        return self.call(attempt, what=what, sleep=sleep)


def is_rate_limited(response: httpx.Response) -> bool:
    """403/429 that says "slow down" (GitHub's primary and secondary limits), not "forbidden"."""
    if response.status_code not in (403, 429):
        return False
    return (
        response.status_code == 429
        or "retry-after" in response.headers
        or response.headers.get("x-ratelimit-remaining") == "0"
    )


def is_transient(response: httpx.Response) -> bool:
    return response.status_code >= 500 or is_rate_limited(response)


def server_wait(response: httpx.Response, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait (`retry-after`, else the rate-limit reset), or None."""
    now = time.time() if now is None else now
    retry_after = response.headers.get("retry-after")
    if retry_after:
        if retry_after.strip().isdigit():
            return float(retry_after)
        try:
            return max(parsedate_to_datetime(retry_after).timestamp() - now, 0.0)
        except (TypeError, ValueError):
            return None
    reset = response.headers.get("x-ratelimit-reset")
    if response.headers.get("x-ratelimit-remaining") == "0" and reset and reset.isdigit():
        return max(int(reset) - now, 0.0)
    return None


def rate_limit_reset(response: httpx.Response) -> datetime | None:
    """When a rate-limited answer says requests will be accepted again (UTC), if it says."""
    wait = server_wait(response)
    return None if wait is None else datetime.fromtimestamp(time.time() + wait, UTC)


def _clean_url(url: httpx.URL) -> str:
    return str(url.copy_with(query=None, fragment=None))


def _url_of(error: httpx.HTTPError) -> str:
    try:
        return _clean_url(error.request.url)
    except RuntimeError:  # an error raised before a request was attached
        return "(no request)"
