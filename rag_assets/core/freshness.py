"""Freshness: how long a source's content took to become searchable, and whether a source is stale.

Times are epoch seconds (UTC). A source's *source time* is when its content was current at the
source: the commit's committer date for GitHub, the fetch time for local folders and websites.
"""

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class SourceFreshness:
    """What the last write of one source says, and what has happened since."""

    source: str
    limit_hours: float
    source_time: float | None  # of the content last written; None when never written
    searchable_at: float | None
    failed_since: float | None = None  # start of the first failed run after that write, if any

    def staleness_seconds(self, now: float) -> float | None:
        """How far behind the source the searchable rows are known to be (None: never written).

        The larger of the last write's lag (source time -> searchable) and, when runs have failed
        since that write, the time the failing runs have kept a change waiting.
        """
        if self.searchable_at is None:
            return None
        lag = self.searchable_at - self.source_time if self.source_time is not None else 0.0
        pending = now - self.failed_since if self.failed_since is not None else 0.0
        return max(lag, pending, 0.0)

    def is_stale(self, now: float) -> bool:
        staleness = self.staleness_seconds(now)
        return staleness is None or staleness > self.limit_hours * 3600


def freshness_metadata(source_time: float | None, searchable_at: float) -> dict:
    """Metadata for one write: when its rows became searchable, and the lag from the source time.

    The keys are rag_assets.metadata's SEARCHABLE_AT and SOURCE_TIME, spelled out: core imports nothing
    that may load dagster."""
    metadata: dict = {"searchable_at": _iso(searchable_at)}
    if source_time is not None:
        metadata["source_time"] = _iso(source_time)
        metadata["freshness_lag_seconds"] = round(max(searchable_at - source_time, 0.0), 3)
    return metadata


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
