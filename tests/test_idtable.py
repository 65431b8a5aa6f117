"""The compact id table answers as a dict would, even for ids that share a prefix."""

from __future__ import annotations

import os
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from tiervault.vault.idtable import IdTable


def _table(ids: list[bytes]) -> IdTable:
    return IdTable(lambda v: ids[v])


@settings(max_examples=60, deadline=None)
@given(prefixes=st.lists(st.binary(min_size=8, max_size=8), min_size=1, max_size=6),
       picks=st.lists(st.tuples(st.integers(0, 5), st.binary(min_size=24, max_size=24)),
                      max_size=3000))
def test_matches_a_dict_with_first_value_kept(prefixes: list[bytes],
                                              picks: list[tuple[int, bytes]]) -> None:
    # Few prefixes, many ids: most ids share their first 8 bytes with others.
    ids: list[bytes] = []
    model: dict[bytes, int] = {}
    t = _table(ids)
    for p, rest in picks:
        bid = prefixes[p % len(prefixes)] + rest
        ids.append(bid)
        t.setdefault(bid, len(ids) - 1)
        model.setdefault(bid, len(ids) - 1)
    assert len(t) == len(model)
    for bid, v in model.items():
        assert t.get(bid) == v
    assert t.get(prefixes[0] + os.urandom(24)) == -1
    assert sorted(t.values()) == sorted(model.values())


def test_grows_past_its_first_capacity_and_reserve_keeps_entries() -> None:
    ids = [os.urandom(32) for _ in range(20_000)]
    t = _table(ids)
    for i, bid in enumerate(ids[:10_000]):
        t.setdefault(bid, i)
    t.reserve(50_000)
    for i, bid in enumerate(ids[10_000:], 10_000):
        t.setdefault(bid, i)
    assert len(t) == 20_000
    assert all(t.get(bid) == i for i, bid in enumerate(ids))
    assert t.get(bytes(32)) == -1


def test_readers_during_growth_see_whole_entries_or_none() -> None:
    """Lookups from other threads while one writer inserts and resizes: an id is
    either not there yet or there with its own value, never another's."""
    ids = [os.urandom(32) for _ in range(30_000)]
    t = _table(ids)
    done = threading.Event()
    wrong: list[int] = []

    def read() -> None:
        while not done.is_set():
            for i in range(0, len(ids), 97):
                v = t.get(ids[i])
                if v not in (-1, i):
                    wrong.append(v)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    for i, bid in enumerate(ids):
        t.setdefault(bid, i)
    done.set()
    for r in readers:
        r.join()
    assert wrong == [] and len(t) == len(ids)
