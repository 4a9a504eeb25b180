"""Times of a run: the status.json times read back, durations as text, and the estimate of
elapsed and remaining seconds the Train page shows."""
from __future__ import annotations

import statistics
from datetime import datetime, timezone


def parse_time(s) -> datetime | None:
    """An ISO 8601 time of status.json as an aware datetime (a time without a zone is local);
    None when absent or not a time."""
    try:
        t = datetime.fromisoformat(s)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo is not None else t.astimezone()


def format_duration(seconds) -> str:
    """'45s', '3m 07s', '2h 05m'; '—' for None."""
    if seconds is None:
        return "—"
    s = int(round(max(seconds, 0)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"


def eta(run, metrics: list[dict], now: datetime | None = None
        ) -> tuple[float | None, float | None]:
    """(seconds elapsed, estimated seconds left) of a run, from its status times and the
    seconds of its epochs so far (else the progress of its first epoch).

    Elapsed runs to `finished_at`, or to `now` (default: the current time) while running;
    None without a start. Left is None unless the run is running and there is something to
    estimate from (at least 2% of the first epoch)."""
    start, end = parse_time(run.started_at), None
    if run.finished_at:
        end = parse_time(run.finished_at)
    elif run.state == "running":
        end = now or datetime.now(timezone.utc)
        end = end if end.tzinfo else end.astimezone()
    elapsed = (end - start).total_seconds() if start and end else None
    if run.state != "running":
        return elapsed, None
    frac = (run.progress or {}).get("fraction") or 0.0
    secs = [m["seconds"] for m in metrics if isinstance(m.get("seconds"), (int, float))]
    if secs:
        per_epoch = statistics.fmean(secs)
    elif elapsed and frac > 0.02:
        per_epoch = elapsed / frac
    else:
        return elapsed, None
    return elapsed, per_epoch * max(run.epochs - run.epoch - frac, 0.0)
