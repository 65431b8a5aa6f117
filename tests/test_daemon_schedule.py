"""Schedules, missed runs, windows and DST changes on an injectable clock (milliseconds).

Times are checked as instants (UTC) and as the local wall time people expect:
a daily 02:30 backup runs once on the day the clocks skip 02:00-03:00 (at the
jump) and once on the day 02:00-03:00 happens twice (the first time).
"""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tiervault.daemon.clock import FakeClock
from tiervault.daemon.main import Daemon, inline_spawn
from tiervault.daemon.schedule import (
    CronExpr,
    ScheduleError,
    Window,
    parse_days,
    parse_hhmm,
    resolve,
)
from tiervault.daemon.scheduler import (
    MANUAL,
    MISSED,
    SCHEDULED,
    CancelToken,
    Job,
    MemoryStore,
    Scheduler,
)
from tiervault.daemon.sets import BackupSet, parse_schedule, parse_set
from tiervault.errors import UsageError

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)  # type: ignore[misc,arg-type]


def local(tz: ZoneInfo, *a: int, fold: int = 0) -> datetime:
    return datetime(*a, tzinfo=tz, fold=fold)  # type: ignore[misc,arg-type]


def runs(expr: str, start: datetime, end: datetime, tz: ZoneInfo) -> list[datetime]:
    """Every run of ``expr`` in (start, end]."""
    c = CronExpr.parse(expr)
    out: list[datetime] = []
    t = start
    while True:
        n = c.next_after(t, tz)
        assert n is not None
        if n > end:
            return out
        out.append(n)
        t = n


def walls(ts: list[datetime], tz: ZoneInfo) -> list[str]:
    return [t.astimezone(tz).strftime("%m-%d %H:%M %Z") for t in ts]


# -- parsing ------------------------------------------------------------------------------


def test_cron_fields_names_steps_and_macros() -> None:
    c = CronExpr.parse("*/15 9-17 * jan-mar mon-fri")
    assert c.minutes == {0, 15, 30, 45}
    assert c.hours == set(range(9, 18))
    assert c.months == {1, 2, 3}
    assert c.wdays == {1, 2, 3, 4, 5}
    assert CronExpr.parse("0 0 * * 7").wdays == {0}  # 7 is Sunday too
    assert CronExpr.parse("@daily").minutes == {0}
    assert CronExpr.parse("5,10 1 1,15 * *").mdays == {1, 15}


@pytest.mark.parametrize("expr, why", [
    ("* * * *", "5 fields"),
    ("60 * * * *", "out of range"),
    ("* 24 * * *", "out of range"),
    ("* * * * funday", "not valid"),
    ("*/0 * * * *", "bad step"),
    ("0 0 31 2 *", "never runs"),
    ("5-1 * * * *", "out of range"),
])
def test_cron_errors_say_why(expr: str, why: str) -> None:
    with pytest.raises(ScheduleError, match=why):
        CronExpr.parse(expr)


def test_days_times_windows_parse() -> None:
    assert parse_days("mon,wed") == [0, 2]
    assert parse_days("mon-fri") == [0, 1, 2, 3, 4]
    assert parse_days("sat-mon") == [0, 5, 6]
    assert parse_days(["daily"]) == list(range(7))
    assert parse_hhmm("7:05") == time(7, 5)
    for bad in ("24:00", "12:60", "noon", "12"):
        with pytest.raises(ScheduleError):
            parse_hhmm(bad)
    with pytest.raises(ScheduleError, match="day of the week"):
        parse_days("mon,funday")
    w = Window.parse("22:00-06:00")
    assert str(w) == "22:00-06:00"
    with pytest.raises(ScheduleError, match="empty"):
        Window.parse("10:00-10:00")
    with pytest.raises(ScheduleError, match="HH:MM-HH:MM"):
        Window.parse("10:00")


def test_set_and_schedule_validation_errors_are_clear() -> None:
    bs = parse_set("home", {"paths": ["/home/me"], "excludes": ["*.tmp"], "tags": ["h"],
                            "schedules": [{"days": ["mon", "fri"], "time": "03:00",
                                           "window": "01:00-05:00"},
                                          {"cron": "0 12 * * *", "pre_script": "true"}],
                            "retention": {"keep_daily": 7}})
    assert [s.spec for s in bs.schedules] == ["mon,fri 03:00", "cron 0 12 * * *"]
    assert bs.schedules[0].cron.text == "0 3 * * 1,5"
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("bad name!", {"paths": ["/x"]}, "set name"),
        ("s", {}, "needs paths"),
        ("s", {"paths": ["rel/path"]}, "not an absolute path"),
        ("s", {"paths": ["/x"], "type": "mysql"}, "data source type"),
        ("s", {"paths": ["/x"], "colour": 1}, "unknown key"),
        ("s", {"paths": ["/x"], "schedules": [{"time": "25:00"}]}, r"schedules\[1\]"),
        ("s", {"paths": ["/x"], "schedules": [{"cron": "* * * * *", "time": "01:00"}]},
         "either cron"),
        ("s", {"paths": ["/x"], "schedules": [{"window": "01:00-02:00"}]}, "needs cron"),
        ("s", {"paths": ["/x"], "schedules": [{"cron": "@daily", "on_pre_failure": "x"}]},
         "abort"),
        ("s", {"paths": ["/x"], "retention": {"keep_dayly": 3}}, "unknown key"),
        ("s", {"paths": ["/x"], "retention": {"keep_daily": -1}}, ">= 0"),
    ]
    for name, doc, msg in cases:
        with pytest.raises(UsageError, match=msg) as ei:
            parse_set(name, doc)
        assert str(ei.value).startswith("config.toml: sets.")


# -- next runs and DST --------------------------------------------------------------------


def test_weekday_schedule_in_local_time() -> None:
    c = CronExpr.from_days(parse_days("mon-fri"), time(12, 30))
    got = runs(c.text, local(BERLIN, 2024, 6, 7, 13, 0), local(BERLIN, 2024, 6, 12, 0, 0),
               BERLIN)
    # Friday 13:00 -> Monday, Tuesday 12:30 (CEST = UTC+2)
    assert got == [utc(2024, 6, 10, 10, 30), utc(2024, 6, 11, 10, 30)]


@pytest.mark.parametrize("tz, day, expected", [
    # clocks jump 02:00 -> 03:00: 02:30 does not exist and runs at the jump, once
    (BERLIN, (2024, 3, 31), ["03-30 02:30 CET", "03-31 03:00 CEST", "04-01 02:30 CEST"]),
    (NEW_YORK, (2024, 3, 10), ["03-09 02:30 EST", "03-10 03:00 EDT", "03-11 02:30 EDT"]),
])
def test_daily_run_in_the_skipped_hour_runs_once_at_the_jump(
        tz: ZoneInfo, day: tuple[int, int, int], expected: list[str]) -> None:
    start = datetime(*day, tzinfo=tz) - timedelta(days=1)
    got = runs("30 2 * * *", start, start + timedelta(days=3), tz)
    assert walls(got, tz) == expected


@pytest.mark.parametrize("tz, day, hour, expected", [
    # clocks go back 03:00 -> 02:00 (Berlin), 02:00 -> 01:00 (New York): once, the first time
    (BERLIN, (2024, 10, 27), 2, ["10-26 02:30 CEST", "10-27 02:30 CEST", "10-28 02:30 CET"]),
    (NEW_YORK, (2024, 11, 3), 1, ["11-02 01:30 EDT", "11-03 01:30 EDT", "11-04 01:30 EST"]),
])
def test_daily_run_in_the_repeated_hour_runs_once(
        tz: ZoneInfo, day: tuple[int, int, int], hour: int, expected: list[str]) -> None:
    start = datetime(*day, tzinfo=tz) - timedelta(days=1)
    got = runs(f"30 {hour} * * *", start, start + timedelta(days=3), tz)
    assert walls(got, tz) == expected
    assert got[2] - got[1] == timedelta(hours=25)


def test_interval_schedule_runs_in_both_repeated_hours_and_skips_none() -> None:
    # every 30 minutes across the Berlin fall-back: 02:00/02:30 happen twice (4 runs)
    got = runs("*/30 * * * *", local(BERLIN, 2024, 10, 27, 1, 0),
               local(BERLIN, 2024, 10, 27, 3, 0), BERLIN)
    assert walls(got, BERLIN) == ["10-27 01:30 CEST", "10-27 02:00 CEST", "10-27 02:30 CEST",
                                  "10-27 02:00 CET", "10-27 02:30 CET", "10-27 03:00 CET"]
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(got))
    # and across the spring jump the skipped hour collapses to one run at the jump
    got = runs("*/30 * * * *", local(NEW_YORK, 2024, 3, 10, 1, 0),
               local(NEW_YORK, 2024, 3, 10, 4, 0), NEW_YORK)
    assert walls(got, NEW_YORK) == ["03-10 01:30 EST", "03-10 03:00 EDT", "03-10 03:30 EDT",
                                    "03-10 04:00 EDT"]


def test_daily_nine_oclock_stays_nine_oclock_across_dst() -> None:
    got = runs("0 9 * * *", local(NEW_YORK, 2024, 3, 8), local(NEW_YORK, 2024, 3, 12), NEW_YORK)
    assert [t.astimezone(NEW_YORK).hour for t in got] == [9, 9, 9, 9]
    assert [t.hour for t in got] == [14, 14, 13, 13]  # UTC moves with the offset


def test_resolve_gap_and_fold() -> None:
    assert resolve(datetime(2024, 3, 31, 2, 30), BERLIN) == [utc(2024, 3, 31, 1, 0)]
    assert resolve(datetime(2024, 10, 27, 2, 30), BERLIN) == [utc(2024, 10, 27, 0, 30)]
    assert resolve(datetime(2024, 10, 27, 2, 30), BERLIN, both_folds=True) == [
        utc(2024, 10, 27, 0, 30), utc(2024, 10, 27, 1, 30)]


def test_feb_29_and_day_or_weekday_rule() -> None:
    got = runs("0 0 29 2 *", utc(2025, 1, 1), utc(2029, 1, 1), ZoneInfo("UTC"))
    assert got == [utc(2028, 2, 29)]
    # both day fields restricted: either matches (cron's rule)
    got = runs("0 0 1 * mon", utc(2024, 7, 1), utc(2024, 7, 16), ZoneInfo("UTC"))
    assert [t.day for t in got] == [8, 15]


def test_window_contains_and_ends_across_midnight_and_dst() -> None:
    w = Window.parse("22:00-06:00")
    assert w.contains(local(BERLIN, 2024, 6, 1, 23, 0), BERLIN)
    assert w.contains(local(BERLIN, 2024, 6, 2, 5, 59), BERLIN)
    assert not w.contains(local(BERLIN, 2024, 6, 2, 6, 0), BERLIN)
    assert w.next_end(local(BERLIN, 2024, 6, 1, 23, 0), BERLIN) == local(BERLIN, 2024, 6, 2, 6)
    assert w.next_start(local(BERLIN, 2024, 6, 2, 12), BERLIN) == local(BERLIN, 2024, 6, 2, 22)
    # a window 01:00-03:00 on the night the clocks go forward is one hour long
    w = Window.parse("01:00-03:00")
    start = local(BERLIN, 2024, 3, 31, 1, 0)
    assert w.next_end(start, BERLIN) - start == timedelta(hours=1)
    # ... and three hours long on the night they go back
    start = local(BERLIN, 2024, 10, 27, 1, 0)
    assert w.next_end(start, BERLIN) - start == timedelta(hours=3)


# -- the scheduler: due runs, missed runs, windows --------------------------------------------


def one_set(*schedules: dict[str, Any], name: str = "home") -> dict[str, BackupSet]:
    return {name: parse_set(name, {"paths": ["/data"], "schedules": list(schedules)})}


def test_due_runs_collapse_and_advance() -> None:
    sch = Scheduler(BERLIN, MemoryStore())
    now = local(BERLIN, 2024, 6, 3, 8, 0)  # a Monday
    assert sch.configure(one_set({"days": "daily", "time": "09:00"}), now) == []
    assert sch.due(now) == []
    assert sch.next_wakeup(now) == local(BERLIN, 2024, 6, 3, 9, 0)
    jobs = sch.due(local(BERLIN, 2024, 6, 3, 9, 0))
    assert [(j.set_name, j.trigger, j.due) for j in jobs] == [
        ("home", SCHEDULED, local(BERLIN, 2024, 6, 3, 9, 0))]
    assert sch.due(local(BERLIN, 2024, 6, 3, 9, 0, 30)) == []
    # the machine slept three days: the passed runs collapse into one
    jobs = sch.due(local(BERLIN, 2024, 6, 6, 12, 0))
    assert len(jobs) == 1
    assert sch.next_wakeup(local(BERLIN, 2024, 6, 6, 12, 0)) == local(BERLIN, 2024, 6, 7, 9, 0)


def test_missed_run_while_off_runs_once_at_start() -> None:
    store = MemoryStore()
    sets = one_set({"days": "daily", "time": "09:00"})
    first = Scheduler(BERLIN, store)
    first.configure(sets, local(BERLIN, 2024, 6, 3, 8, 0))
    # the daemon stops at 08:30 and starts again three days later at 07:00
    again = Scheduler(BERLIN, store)
    missed = again.configure(sets, local(BERLIN, 2024, 6, 6, 7, 0))
    assert [(j.trigger, j.due) for j in missed] == [(MISSED, local(BERLIN, 2024, 6, 3, 9, 0))]
    assert [j.trigger for j in again.due(local(BERLIN, 2024, 6, 6, 7, 0))] == [MISSED]
    assert again.due(local(BERLIN, 2024, 6, 6, 8, 59)) == []
    assert [j.trigger for j in again.due(local(BERLIN, 2024, 6, 6, 9, 0))] == [SCHEDULED]
    # restarted before the next run: nothing missed
    third = Scheduler(BERLIN, store)
    assert third.configure(sets, local(BERLIN, 2024, 6, 6, 10, 0)) == []
    # a schedule (re)added while the daemon runs never counts as missed
    fourth = Scheduler(BERLIN, store)
    assert fourth.configure(sets, local(BERLIN, 2024, 6, 9, 10, 0), startup=False) == []
    assert fourth.due(local(BERLIN, 2024, 6, 9, 10, 0)) == []


def test_missed_skip_policy_and_changed_schedule_do_not_run_at_start() -> None:
    store = MemoryStore()
    skip = one_set({"days": "daily", "time": "09:00", "missed": "skip"})
    Scheduler(BERLIN, store).configure(skip, local(BERLIN, 2024, 6, 3, 8, 0))
    assert Scheduler(BERLIN, store).configure(skip, local(BERLIN, 2024, 6, 5, 8, 0)) == []
    store = MemoryStore()
    Scheduler(BERLIN, store).configure(one_set({"days": "daily", "time": "09:00"}),
                                       local(BERLIN, 2024, 6, 3, 8, 0))
    changed = one_set({"days": "daily", "time": "10:00"})
    assert Scheduler(BERLIN, store).configure(changed, local(BERLIN, 2024, 6, 5, 8, 0)) == []


def test_run_due_outside_window_waits_for_it_and_gets_its_end_as_deadline() -> None:
    sch = Scheduler(BERLIN, MemoryStore())
    store_sets = one_set({"cron": "0 12 * * *", "window": "20:00-23:00"})
    sch.configure(store_sets, local(BERLIN, 2024, 6, 3, 11, 0))
    assert sch.due(local(BERLIN, 2024, 6, 3, 12, 0)) == []  # not started outside
    assert sch.entries_json()[0]["pending"]["trigger"] == SCHEDULED
    assert sch.next_wakeup(local(BERLIN, 2024, 6, 3, 12, 0)) == local(BERLIN, 2024, 6, 3, 20, 0)
    assert sch.due(local(BERLIN, 2024, 6, 3, 19, 59)) == []
    jobs = sch.due(local(BERLIN, 2024, 6, 3, 20, 0))
    assert len(jobs) == 1
    assert sch.deadline(jobs[0], local(BERLIN, 2024, 6, 3, 20, 0)) == \
        local(BERLIN, 2024, 6, 3, 23, 0)
    # a manual run has no window
    manual = Job("home", MANUAL, local(BERLIN, 2024, 6, 3, 12, 0))
    assert sch.may_start(manual, local(BERLIN, 2024, 6, 3, 12, 0))
    assert sch.deadline(manual, local(BERLIN, 2024, 6, 3, 12, 0)) is None


def test_cancel_token_deadline_and_first_reason_wins() -> None:
    clock = FakeClock(utc(2024, 1, 1))
    tok = CancelToken(clock.now, utc(2024, 1, 1, 1))
    assert not tok.cancelled()
    clock.advance(3600)
    assert tok.cancelled()
    assert tok.reason == "the allowed time window closed"
    tok.cancel("later reason")
    assert tok.reason == "the allowed time window closed"


# -- the daemon loop on a fake clock ------------------------------------------------------------


class FakeRunner:
    """A backup that takes ``duration`` seconds of fake time, checking for cancellation."""

    def __init__(self, clock: FakeClock, duration: float = 600) -> None:
        self.clock = clock
        self.duration = duration
        self.runs: list[dict[str, Any]] = []

    def run(self, job: Job, bs: BackupSet, token: CancelToken) -> dict[str, Any]:
        start = self.clock.now()
        status = "success"
        while self.clock.now() - start < timedelta(seconds=self.duration):
            if token.cancelled():
                status = "cancelled"
                break
            self.clock.advance(60)  # a file every minute
        res = {"set": bs.name, "trigger": job.trigger, "start": start, "end": self.clock.now(),
               "status": status, "reason": token.reason}
        self.runs.append(res)
        return res


class FakeIdle:
    def __init__(self) -> None:
        self.rounds: list[datetime] = []
        self.aborts = 0
        self.clock: FakeClock | None = None
        self.last: dict[str, Any] = {}
        self.tiers: list[dict[str, Any]] = []

    def run(self) -> dict[str, Any]:
        assert self.clock is not None
        self.rounds.append(self.clock.now())
        return {}

    def abort(self) -> None:
        self.aborts += 1


def make_daemon(clock: FakeClock, sets: dict[str, BackupSet], runner: FakeRunner,
                idle: FakeIdle, tz: ZoneInfo = BERLIN, store: MemoryStore | None = None,
                spawn: Any = inline_spawn) -> Daemon:
    idle.clock = clock
    sch = Scheduler(tz, store or MemoryStore())
    sch.configure(sets, clock.now())
    return Daemon(clock, sch, sets, runner, idle, probe_interval=300, tick_interval=60,
                  spawn=spawn)


def simulate(d: Daemon, clock: FakeClock, until: datetime) -> None:
    while clock.now() < until:
        d.tick()
        clock.sleep(d.sleep_time())


def test_a_week_of_schedules_on_a_fake_clock() -> None:
    clock = FakeClock(local(NEW_YORK, 2024, 3, 4, 0, 0))  # Monday, a week before DST starts
    sets = {**one_set({"days": "mon-fri", "time": "12:30"}, name="work"),
            **one_set({"cron": "0 2 * * 0"}, name="weekly")}
    runner, idle = FakeRunner(clock, duration=300), FakeIdle()
    d = make_daemon(clock, sets, runner, idle, tz=NEW_YORK)
    simulate(d, clock, local(NEW_YORK, 2024, 3, 12, 0, 0))
    started = [(r["set"], r["start"].astimezone(NEW_YORK).strftime("%a %d %H:%M %Z"))
               for r in runner.runs]
    assert started == [("work", "Mon 04 12:30 EST"), ("work", "Tue 05 12:30 EST"),
                       ("work", "Wed 06 12:30 EST"), ("work", "Thu 07 12:30 EST"),
                       ("work", "Fri 08 12:30 EST"), ("weekly", "Sun 10 03:00 EDT"),
                       ("work", "Mon 11 12:30 EDT")]
    assert all(r["status"] == "success" for r in runner.runs)
    # idle rounds every probe interval while no job runs, and right after each job
    assert len(idle.rounds) > 100
    for r in runner.runs:
        assert any(r["end"] <= t <= r["end"] + timedelta(seconds=60) for t in idle.rounds)


def test_window_stops_a_running_backup_at_its_end() -> None:
    clock = FakeClock(local(BERLIN, 2024, 6, 3, 21, 0))
    sets = one_set({"cron": "30 21 * * *", "window": "21:00-22:00"})
    runner, idle = FakeRunner(clock, duration=3 * 3600), FakeIdle()
    d = make_daemon(clock, sets, runner, idle)
    simulate(d, clock, local(BERLIN, 2024, 6, 3, 23, 0))
    assert len(runner.runs) == 1
    r = runner.runs[0]
    assert r["status"] == "cancelled"
    assert r["reason"] == "the allowed time window closed"
    assert r["start"] == local(BERLIN, 2024, 6, 3, 21, 30)
    assert r["end"] == local(BERLIN, 2024, 6, 3, 22, 0)


def test_missed_run_at_start_waits_for_its_window() -> None:
    store = MemoryStore()
    sets = one_set({"cron": "0 1 * * *", "window": "00:30-05:00"})
    Scheduler(BERLIN, store).configure(sets, local(BERLIN, 2024, 6, 3, 0, 0))
    # off for two days; back at 09:00: the missed run waits for 00:30, runs once
    clock = FakeClock(local(BERLIN, 2024, 6, 5, 9, 0))
    runner, idle = FakeRunner(clock, duration=120), FakeIdle()
    d = make_daemon(clock, sets, runner, idle, store=store)
    simulate(d, clock, local(BERLIN, 2024, 6, 6, 2, 0))
    assert [(r["trigger"], r["start"]) for r in runner.runs] == [
        (MISSED, local(BERLIN, 2024, 6, 6, 0, 30)), (SCHEDULED, local(BERLIN, 2024, 6, 6, 1, 0))]


def test_manual_run_cancel_and_stop() -> None:
    clock = FakeClock(local(BERLIN, 2024, 6, 3, 10, 0))
    runner, idle = FakeRunner(clock), FakeIdle()
    d = make_daemon(clock, one_set(), runner, idle)
    res = d.request_run("home")
    assert res["queued"]
    with pytest.raises(Exception, match="no set named 'nope'"):
        d.request_run("nope")
    again = d.request_run("home")
    assert not again["queued"] and again["request_id"] == res["request_id"]
    d.tick()
    assert runner.runs[0]["trigger"] == MANUAL and runner.runs[0]["status"] == "success"
    # cancel --all drops queued jobs; stop() refuses new ones and aborts the idle round
    d.tick()  # the finished job is collected
    d.request_run("home")
    assert d.cancel(drop_queue=True)["dropped"][0]["set"] == "home"
    assert not d.queue
    d.stop()
    assert d.stopping and idle.aborts >= 1
    with pytest.raises(Exception, match="shutting down"):
        d.request_run("home")


def test_cancel_and_stop_reach_the_running_job() -> None:
    clock = FakeClock(local(BERLIN, 2024, 6, 3, 10, 0))
    seen: list[CancelToken] = []

    def spawn(fn: Any, name: str) -> Any:
        return Lingering(FakeIdle())  # the job "runs" in the background: never started here

    d = make_daemon(clock, one_set(), FakeRunner(clock), FakeIdle(), spawn=spawn)
    d.request_run("home")
    d.tick()
    assert d.running is not None
    seen.append(d.running.token)
    assert d.status()["running"]["set"] == "home"
    assert d.cancel()["cancelled"]["set"] == "home"
    assert seen[0].cancelled() and seen[0].reason == "cancelled by the user"


class Lingering:
    """An idle round that keeps running until it is aborted (like a long sync)."""

    def __init__(self, idle: FakeIdle) -> None:
        self.idle = idle
        self.start_aborts = idle.aborts

    def is_alive(self) -> bool:
        return self.idle.aborts == self.start_aborts

    def join(self, timeout: float | None = None) -> None:
        pass


def test_a_due_job_aborts_the_idle_round_first() -> None:
    clock = FakeClock(local(BERLIN, 2024, 6, 3, 8, 59))
    idle = FakeIdle()

    def spawn(fn: Any, name: str) -> Any:
        if name == "idle":
            idle.run()
            return Lingering(idle)
        return inline_spawn(fn, name)

    runner = FakeRunner(clock, duration=60)
    d = make_daemon(clock, one_set({"cron": "0 9 * * *"}), runner, idle, spawn=spawn)
    d.tick()
    assert len(idle.rounds) == 1 and d.status()["state"] == "idle-round"
    clock.set(local(BERLIN, 2024, 6, 3, 9, 0))
    d.tick()  # due: the sync is asked to stop; the job waits for it
    assert idle.aborts == 1 and runner.runs == []
    assert d.sleep_time() == pytest.approx(0.05)
    d.tick()
    assert len(runner.runs) == 1


def test_status_shows_schedules_and_queue() -> None:
    clock = FakeClock(local(BERLIN, 2024, 6, 3, 8, 0))
    d = make_daemon(clock, one_set({"days": "mon", "time": "09:00", "window": "08:00-10:00"}),
                    FakeRunner(clock), FakeIdle())
    d.request_run("home")
    st = d.status()
    assert st["timezone"] == "Europe/Berlin"
    assert st["queue"][0]["set"] == "home"
    assert st["schedules"][0]["next_run"] == "2024-06-03T09:00:00+02:00"
    assert st["schedules"][0]["window"] == "08:00-10:00"


def test_fake_clock_sleep_with_event() -> None:
    clock = FakeClock(utc(2024, 1, 1))
    clock.sleep(5, threading.Event())
    assert clock.now() == utc(2024, 1, 1, 0, 0, 5)


def test_parse_schedule_defaults() -> None:
    s = parse_schedule({"cron": "@hourly"}, "x")
    assert (s.on_pre_failure, s.missed, s.window, s.script_timeout) == ("abort", "run-once",
                                                                       None, 600.0)


def test_seconds_field_and_speed() -> None:
    got = runs("*/20 * * * * *", utc(2024, 1, 1, 0, 0, 5), utc(2024, 1, 1, 0, 1, 0),
               ZoneInfo("UTC"))
    assert got == [utc(2024, 1, 1, 0, 0, 20), utc(2024, 1, 1, 0, 0, 40), utc(2024, 1, 1, 0, 1)]
    import time as _time

    t0 = _time.perf_counter()
    got = runs("* * * * *", local(BERLIN, 2024, 10, 27, 0, 0), local(BERLIN, 2024, 10, 27, 4, 0),
               BERLIN)
    assert len(got) == 5 * 60  # 4 wall hours, one of them twice
    assert _time.perf_counter() - t0 < 2
