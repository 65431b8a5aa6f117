"""Names with terminal escape sequences print inert (issue 9).

A file named with ESC sequences, CR, newline or a C1 control must not rewrite
the administrator's terminal: human output shows them as ``\\x1b``-style
escapes; ``--json`` keeps the exact names.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.helpers import describe, init_vault, ok, run_tv, tv_json

#: Hostile names (bytes: the last ones are not UTF-8).
NAMES = [
    b"clear\x1b[2Jscreen",           # ESC [ 2 J: erase the screen
    b"title\x1b]0;owned\x07",        # ESC ] 0 ; title BEL: retitle the window
    b"cr\rover",                      # CR: overwrite the line
    b"nl\nforged line",               # newline: forge a line
    "c1\u009bcsi".encode(),           # U+009B (CSI as a C1 control), valid UTF-8
    b"raw\x9bbyte",                   # the byte 0x9b alone: not UTF-8
    b"del\x7fand\ttab",
    b"back\\slash",
]


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def assert_inert(proc: subprocess.CompletedProcess[str]) -> None:
    """No control byte but line ends, no DEL, no ESC, no C1 (raw or UTF-8) on either stream."""
    assert "Traceback" not in proc.stderr, describe(proc)
    for stream in (proc.stdout, proc.stderr):
        raw = _raw(stream)
        bad = sorted({b for b in raw if (b < 0x20 and b != 0x0A) or b in (0x7F, 0x9B)})
        assert not bad, f"control bytes {bad} in output:\n{describe(proc)}"
        assert not any(0x80 <= ord(c) <= 0x9F for c in stream), describe(proc)


def _make(src: Path) -> None:
    os.mkdir(src)
    for n in NAMES:
        with open(os.path.join(os.fsencode(src), n), "wb") as f:
            f.write(b"data " + n)
    os.mkdir(os.path.join(os.fsencode(src), b"dir\x1b[31m"))
    with open(os.path.join(os.fsencode(src), b"dir\x1b[31m", b"inner\x1b[0m"), "wb") as f:
        f.write(b"inner")


def _too_long(top: Path, name: bytes) -> bytes:
    """A directory chain whose path just fits PATH_MAX, holding a file ``name`` whose
    own path does not: the backup cannot read it and warns (even as root)."""
    limit = os.pathconf("/", "PC_PATH_MAX")
    os.mkdir(top)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    path = os.fsencode(top)
    try:
        while len(path) + 1 + len(name) < limit:
            comp = b"x" * min(200, max(1, limit - 20 - len(path) - len(name)))
            os.mkdir(comp, dir_fd=fd)
            nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, path = nfd, path + b"/" + comp
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    return path + b"/" + name


def test_hostile_names_print_inert(tmp_path: Path) -> None:
    home, _ = init_vault(tmp_path)
    src = tmp_path / "src"
    _make(src)
    first = run_tv(home, "-v", "backup", "--tag", "tag\x1b[5m", "--host", "host\x1b]0;x\x07",
                   str(src))
    ok(first)
    assert_inert(first)
    assert f"{src}/clear\\x1b[2Jscreen\n" in first.stderr, describe(first)  # -v lists it

    # A second snapshot: one file changed, one added (diff shows both), plus an
    # unreadable file with an escape in its name (a warning).
    with open(os.path.join(os.fsencode(src), NAMES[0]), "ab") as f:
        f.write(b" more")
    with open(os.path.join(os.fsencode(src), b"new\x1b[Kfile"), "wb") as f:
        f.write(b"new")
    hidden = _too_long(tmp_path / "long", b"hidden\x1b[2J\x9b")
    second = run_tv(home, "backup", str(src), str(tmp_path / "long"))
    assert second.returncode == 6, describe(second)
    assert_inert(second)
    assert "hidden\\x1b[2J\\x9b" in second.stderr, describe(second)

    snaps = tv_json(home, "snapshots")
    a, b = snaps[0]["id"], snaps[1]["id"]
    for args in (("ls", b), ("ls", "-l", b), ("find", "*"), ("diff", a, b), ("snapshots",),
                 ("ls", b, str(src) + "/nothing\x1b[2J")):
        proc = run_tv(home, *args)
        assert "Traceback" not in proc.stderr, describe(proc)
        assert_inert(proc)
    listing = run_tv(home, "ls", b).stdout
    for shown in ("clear\\x1b[2Jscreen", "title\\x1b]0;owned\\x07", "cr\\x0dover",
                  "nl\\x0aforged line", "c1\\x9bcsi", "raw\\x9bbyte", "del\\x7fand\\x09tab",
                  "back\\\\slash", "dir\\x1b[31m/inner\\x1b[0m"):
        assert f"{src}/{shown}\n" in listing, listing
    diff = run_tv(home, "diff", a, b).stdout
    assert f"M {src}/clear\\x1b[2Jscreen\n" in diff and f"+ {src}/new\\x1b[Kfile\n" in diff, diff
    table = run_tv(home, "snapshots").stdout
    assert "tag\\x1b[5m" in table and "host\\x1b]0;x\\x07" in table, table
    err = run_tv(home, "ls", b, str(src) + "/nothing\x1b[2J")
    assert err.returncode == 2 and "nothing\\x1b[2J is not in snapshot" in err.stderr, \
        describe(err)
    bad_url = run_tv(home, "tier", "add", "--no-sync", "nosuch\x1b[2J://x")
    # The URL parser escapes control characters itself (its messages also reach the
    # daemon's log), and the printing escapes that backslash once more: inert either way.
    assert bad_url.returncode == 2 and "nosuch\\\\x1b[2J://x" in bad_url.stderr, \
        describe(bad_url)
    assert_inert(bad_url)

    # Restore: a directory in the way of one with an escape in its name is a warning.
    target = tmp_path / "out"
    blocker = os.fsencode(target) + os.fsencode(src) + b"/dir\x1b[31m"
    os.makedirs(os.path.dirname(blocker))
    with open(blocker, "wb") as f:
        f.write(b"in the way")
    rest = run_tv(home, "restore", a, str(target), "--include", str(src))
    assert rest.returncode == 1, describe(rest)
    assert_inert(rest)
    assert "dir\\x1b[31m" in rest.stderr, describe(rest)

    # --json keeps the exact names (bytes that are not UTF-8 as surrogates).
    want = {os.fsdecode(os.fsencode(src) + b"/" + n) for n in NAMES}
    got = {e["path"] for e in tv_json(home, "ls", a)}
    assert want <= got, sorted(want - got)
    assert {os.fsencode(p) for p in got} >= {os.fsencode(src) + b"/" + n for n in NAMES}
    found = {h["path"] for h in tv_json(home, "find", "*")}
    assert want <= found
    d = tv_json(home, "diff", a, b)
    assert d["modified"] == [os.fsdecode(os.fsencode(src) + b"/" + NAMES[0])]
    s2 = run_tv(home, "--json", "backup", str(tmp_path / "long"))
    assert s2.returncode == 6, describe(s2)
    warned = [json.loads(ln) for ln in s2.stderr.splitlines() if ln.startswith("{")]
    assert os.fsdecode(hidden) in {w.get("path") for w in warned}, describe(s2)
