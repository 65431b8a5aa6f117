"""Retention (grandfather-father-son) and archiving over a synthetic year."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from tiervault.engine.policy import ARCHIVE_TAG, GfsPolicy, apply_gfs, archive_due
from tiervault.vault.snapshot import Snapshot

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _snap(t: datetime, tags: list[str] | None = None) -> Snapshot:
    return Snapshot(time=t.isoformat(), hostname="h", username="u", paths=["/data"],
                    tree="00" * 32, tags=tags or [], id=t.strftime("%Y%m%d%H%M"))


def _year() -> list[Snapshot]:
    """A session every 6 hours for a year up to NOW."""
    out = []
    t = NOW - timedelta(days=365)
    while t <= NOW:
        out.append(_snap(t))
        t += timedelta(hours=6)
    return out


def _last_per(snaps: list[Snapshot], key) -> dict:  # type: ignore[no-untyped-def]
    best: dict = {}
    for s in snaps:
        k = key(s.datetime())
        if k not in best or s.datetime() > best[k].datetime():
            best[k] = s
    return best


def test_gfs_keeps_exactly_the_expected_sessions() -> None:
    snaps = _year()
    keep, remove, reasons = apply_gfs(snaps, GfsPolicy(7, 30, 12, 12, 5), NOW)
    expected: set[str] = set()
    expected |= {s.id for s in snaps if s.datetime() >= NOW - timedelta(days=7)}
    days = {(NOW.date() - timedelta(days=i)) for i in range(30)}
    expected |= {s.id for d, s in _last_per(snaps, lambda t: t.date()).items() if d in days}
    weeks = {(NOW - timedelta(weeks=i)).isocalendar()[:2] for i in range(12)}
    expected |= {s.id for w, s in _last_per(snaps, lambda t: t.isocalendar()[:2]).items()
                 if w in weeks}
    months = set()
    y, m = NOW.year, NOW.month
    for _ in range(12):
        months.add((y, m))
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    expected |= {s.id for k, s in _last_per(snaps, lambda t: (t.year, t.month)).items()
                 if k in months}
    expected |= {s.id for k, s in _last_per(snaps, lambda t: t.year).items()}
    assert {s.id for s in keep} == expected
    assert {s.id for s in keep} | {s.id for s in remove} == {s.id for s in snaps}
    # Spot checks that do not depend on the construction above.
    ids = {s.id for s in keep}
    assert "202606301800" in ids  # the last session of June
    assert "202606151200" not in ids  # an ordinary mid-month session
    assert "202512311800" in ids  # the last session of 2025
    assert len([s for s in keep if s.datetime() >= NOW - timedelta(days=7)]) == 29
    assert reasons["202606301800"] == ["monthly"]


def test_archives_survive_retention() -> None:
    snaps = _year()
    old = [s for s in snaps if s.id in ("202601101200", "202603050600")]
    for s in old:
        s.tags = [ARCHIVE_TAG]
    keep, _, reasons = apply_gfs(snaps, GfsPolicy(1, 0, 0, 0, 0), NOW)
    kept = {s.id for s in keep}
    assert {s.id for s in old} <= kept
    assert reasons["202601101200"] == ["archived"]
    assert len(kept) == 2 + 5  # the archives and the last day's sessions


def test_archive_rule_marks_first_session_after_each_trigger() -> None:
    rules: list[dict[str, object]] = [{"days": [1], "time": "00:00"}]
    history: list[Snapshot] = []
    t = datetime(2025, 11, 26, 3, 0, tzinfo=UTC)
    while t <= NOW:
        tags = [ARCHIVE_TAG] if archive_due(rules, history, t) else []
        history.append(_snap(t, tags))
        t += timedelta(hours=6)
    archived = [s.datetime() for s in history if ARCHIVE_TAG in s.tags]
    # The very first session (no archive yet since the last trigger) plus one
    # per month: the first session after the 1st at 00:00.
    assert archived[0] == datetime(2025, 11, 26, 3, 0, tzinfo=UTC)
    firsts = [datetime(y, m, 1, 3, 0, tzinfo=UTC) for y, m in
              [(2025, 12)] + [(2026, i) for i in range(1, 12)]]
    assert archived[1:] == firsts


def test_weekday_archive_rule_and_months() -> None:
    rules: list[dict[str, object]] = [{"months": [6, 12], "weekdays": ["sun"], "time": "20:00"}]
    now = datetime(2026, 6, 14, 21, 0, tzinfo=UTC)  # a Sunday in June, after 20:00
    assert archive_due(rules, [], now)
    assert not archive_due(rules, [_snap(datetime(2026, 6, 14, 20, 30, tzinfo=UTC),
                                         [ARCHIVE_TAG])], now)
    assert date(2026, 6, 14).weekday() == 6
