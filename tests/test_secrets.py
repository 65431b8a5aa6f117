"""Issue 9: the key derivation, secrets kept from child processes, passwords kept out of
messages, and the warning about tiers reached in clear.

- New key files use scrypt N=2^15, r=8, p=4; key files with other (older)
  parameters still open, and ``key passwd`` writes the current ones. A key file
  asking for unreasonable parameters is refused by name, before any work.
- A passphrase under 12 characters gets one warning line (init, key add, key passwd).
- Pre/post scripts and notification commands get no passphrase, no tier password.
- init/attach/tier add of an ftp:// tier say once that it travels in clear.

Most tests here run without ``TIERVAULT_INSECURE_TEST_KDF`` (the suite's cheap
KDF) where they look at the parameters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.daemonkit import DaemonProc, add_to_config, daemon_fixture  # noqa: F401
from tests.helpers import (
    CLEARTEXT,
    PASSWORD,
    TEST_KDF_ENV,
    cheapen_key,
    describe,
    init_vault,
    ok,
    one_line_error,
    run_tv,
)
from tests.servers.ftp_server import FtpServerProcess

REAL_KDF = {TEST_KDF_ENV: None}
FTP_USER, FTP_PASSWORD = "tv", "Ftp-secret-Qx81"


def _keys(home: Path) -> list[dict[str, object]]:
    return json.loads(ok(run_tv(home, "--json", "key", "list")).stdout)  # type: ignore[no-any-return]


def _warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("warning:")]


def test_new_vaults_get_scrypt_2_15_p4_and_key_passwd_upgrades_an_old_key_file(
        tmp_path: Path) -> None:
    home, vault = tmp_path / "home", tmp_path / "vault"
    res = json.loads(ok(run_tv(home, "--json", "init", vault, env=REAL_KDF)).stdout)
    assert res["kdf"] == {"n": 2**15, "r": 8, "p": 4} and res["warnings"] == []
    assert [k["kdf"] for k in _keys(home)] == [{"n": 2**15, "r": 8, "p": 4}]

    # A key file as the previous release wrote it (N=2^17, p=1) keeps opening the vault ...
    from tiervault.storage.base import FileType, Handle
    from tiervault.storage.local import LocalBackend
    from tiervault.vault.crypto import KdfParams
    from tiervault.vault.repository import Repository

    backend = LocalBackend(vault)
    repo = Repository.open(backend, PASSWORD, load_index=False)
    repo.add_key(PASSWORD, KdfParams(n=2**17, p=1))
    backend.remove(Handle(FileType.KEY, repo.key_name))
    assert [k["kdf"] for k in _keys(home)] == [{"n": 2**17, "r": 8, "p": 1}]
    text = ok(run_tv(home, "key", "list")).stdout
    assert "scrypt N=2^17, r=8, p=1, 128 MiB" in text

    # ... and key passwd (the same passphrase again) writes it with today's parameters.
    out = ok(run_tv(home, "--json", "key", "passwd", env={**REAL_KDF,
                                                          "TIERVAULT_NEW_PASSWORD": PASSWORD}))
    doc = json.loads(out.stdout)
    assert doc["kdf"] == {"n": 2**15, "r": 8, "p": 4}
    assert doc["previous_kdf"] == {"n": 2**17, "r": 8, "p": 1}
    assert _warnings(out.stderr) == [] and doc["warnings"] == []
    assert [k["kdf"] for k in _keys(home)] == [{"n": 2**15, "r": 8, "p": 4}]
    # The text form says so too.
    cheapen_key(vault)
    said = ok(run_tv(home, "key", "passwd", env={**REAL_KDF,
                                                 "TIERVAULT_NEW_PASSWORD": PASSWORD})).stdout
    assert "scrypt N=2^15, r=8, p=4, 32 MiB, was scrypt N=2^10" in said, said


def test_a_key_file_with_huge_parameters_is_refused_by_name(tmp_path: Path) -> None:
    home, vault = init_vault(tmp_path)
    (key,) = list((vault / "keys").iterdir())
    doc = json.loads(key.read_text())
    key.write_text(json.dumps(dict(doc, n=2**24, r=32, p=16)))
    line = one_line_error(run_tv(home, "snapshots"))
    assert f"keys/{key.name} has unreasonable KDF parameters" in line, line
    assert "n=16777216, r=32, p=16" in line


def test_short_passphrases_get_one_warning_line(tmp_path: Path) -> None:
    short = {"TIERVAULT_PASSWORD": "tiny-pw"}
    home = tmp_path / "home"
    p = ok(run_tv(home, "init", tmp_path / "vault", env=short))
    (w,) = _warnings(p.stderr)
    assert "only 7 characters" in w and "12 or more" in w, describe(p)
    cheapen_key(tmp_path / "vault", "tiny-pw")

    p = ok(run_tv(home, "--json", "key", "add",
                  env={**short, "TIERVAULT_NEW_PASSWORD": "also-short"}))
    doc = json.loads(p.stdout)
    assert len(doc["warnings"]) == 1 and "only 10 characters" in doc["warnings"][0]
    (line,) = p.stderr.splitlines()
    assert json.loads(line) == {"message_type": "warning", "message": doc["warnings"][0]}

    p = ok(run_tv(home, "key", "passwd",
                  env={**short, "TIERVAULT_NEW_PASSWORD": "still short"}))
    assert len(_warnings(p.stderr)) == 1, describe(p)
    p = ok(run_tv(home, "key", "passwd", env={"TIERVAULT_PASSWORD": "still short",
                                              "TIERVAULT_NEW_PASSWORD": "a long passphrase"}))
    assert _warnings(p.stderr) == [], describe(p)
    ok(run_tv(home, "snapshots", env={"TIERVAULT_PASSWORD": "a long passphrase"}))


SECRETS = {"TIERVAULT_FTP_PASSWORD": "ftp-pw-Zq93", "TIERVAULT_SFTP_PASSWORD": "sftp-pw-Rk17",
           "AWS_SECRET_ACCESS_KEY": "aws-secret-Lm55", "TIERVAULT_NEW_PASSWORD": "new-pw-Ty02",
           "TIERVAULT_SOME_SECRET": "other-secret-Hv66"}


def test_scripts_and_notifications_get_no_secret(
        tmp_path: Path, daemon_proc: Callable[[Path], DaemonProc]) -> None:
    home, _ = init_vault(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data\n")
    pre_env, post_env, notify_env = (tmp_path / n for n in ("pre.env", "post.env",
                                                            "notify.env"))
    ok(run_tv(home, "set", "add", "docs", src, "--pre-script", f"env > {pre_env}",
              "--post-script", f"env > {post_env}"))
    ok(run_tv(home, "set", "add", "broken", src, "--pre-script", "exit 4"))
    add_to_config(home, f'[daemon.notify]\ncommand = "env > {notify_env}"\n')
    d = daemon_proc(home).start(env=SECRETS)

    sess = json.loads(ok(run_tv(home, "--json", "run", "docs", "--wait", "--timeout",
                                "120")).stdout)["session"]
    assert sess["status"] == "success", sess
    failed = run_tv(home, "--json", "run", "broken", "--wait", "--timeout", "120")
    assert failed.returncode == 1, describe(failed)
    d.wait_for(notify_env.exists, 30, "the notification command")
    d.wait_for(lambda: "TIERVAULT_EVENT=" in notify_env.read_text(), 30, "its output")
    d.stop()

    pre, post, note = (p.read_text() for p in (pre_env, post_env, notify_env))
    for text in (pre, post, note):
        for secret in (PASSWORD, *SECRETS.values()):
            assert secret not in text, (secret, text)
        assert "TIERVAULT_PASSWORD" not in text
        assert "PATH=" in text  # the rest of the environment is there
    assert "TIERVAULT_SET=docs" in pre and "TIERVAULT_PHASE=pre" in pre
    assert "TIERVAULT_RESULT=success" in post and "TIERVAULT_SNAPSHOT_ID=" in post
    assert "TIERVAULT_EVENT=session_failed" in note and "TIERVAULT_SET=broken" in note


@pytest.fixture
def ftp(tmp_path: Path) -> Iterator[FtpServerProcess]:
    srv = FtpServerProcess(tmp_path / "ftproot", user=FTP_USER, password=FTP_PASSWORD)
    yield srv
    srv.stop()


def test_ftp_tiers_get_a_cleartext_warning_at_init_attach_and_tier_add(
        tmp_path: Path, ftp: FtpServerProcess) -> None:
    url = f"ftp://{FTP_USER}:{FTP_PASSWORD}@127.0.0.1:{ftp.port}/vault"
    home = tmp_path / "home"
    p = ok(run_tv(home, "init", tmp_path / "speed", url))
    (w,) = _warnings(p.stderr)
    assert CLEARTEXT in w and "plain FTP" in w and FTP_PASSWORD not in p.stderr + p.stdout
    assert f"ftp://{FTP_USER}:***@127.0.0.1:{ftp.port}/vault" in w
    # Not on every command.
    ok(run_tv(home, "snapshots"))
    assert _warnings(run_tv(home, "tiers").stderr) == []

    other = run_tv(tmp_path / "home2", "--json", "attach", url, "--read-only")
    doc = json.loads(ok(other).stdout)
    assert len(doc["warnings"]) == 1 and CLEARTEXT in doc["warnings"][0]
    assert json.loads(other.stderr.splitlines()[0])["message"] == doc["warnings"][0]

    url2 = f"ftp://{FTP_USER}:{FTP_PASSWORD}@127.0.0.1:{ftp.port}/second"
    p = ok(run_tv(home, "tier", "add", url2))
    assert len(_warnings(p.stderr)) == 1 and FTP_PASSWORD not in p.stderr, describe(p)
    s3 = "s3://bucket/p?endpoint=http://127.0.0.1:1&access_key=a&secret_key=s3-Secret-99"
    p = run_tv(home, "tier", "add", s3, "--no-sync")
    (w,) = _warnings(p.stderr)
    assert "http:// S3 endpoint" in w and "s3-Secret-99" not in p.stderr + p.stdout
    ftps = f"ftps://{FTP_USER}:{FTP_PASSWORD}@127.0.0.1:{ftp.port}/third"
    assert _warnings(run_tv(home, "tier", "add", ftps, "--no-sync").stderr) == []


@pytest.mark.parametrize("raw", ["pa[ss", "pa/ss?x#y", "a]b", "p@ss/w#rd"])
def test_an_unencoded_password_gives_a_one_line_error_without_it(
        tmp_path: Path, raw: str) -> None:
    url = f"ftp://user:{raw}@127.0.0.1:1/vault"
    line = one_line_error(run_tv(tmp_path / "home", "init", url))
    assert raw not in line and "percent-encoded" in line and "ftp://user:***@" in line, line
    assert not (tmp_path / "home").exists()


# -- URL redaction: a property of parse_url/redact, in-process ------------------------------

PASSWORDS = st.text(min_size=1, max_size=40) | st.text(alphabet="/?#[]@:% &=!'\"\\",
                                                       min_size=1, max_size=12)
TEMPLATES = ["ftp://user:{}@127.0.0.1:2121/vault", "ftps://u%40x:{}@host/a/b?ca_file=/c",
             "sftp://me:{}@[::1]:22/~/vault", "s3://AKIA:{}@bucket/prefix?endpoint=http://h:9"]


@settings(max_examples=400, deadline=None)
@given(pw=PASSWORDS, other=PASSWORDS, template=st.sampled_from(TEMPLATES))
def test_redacted_urls_and_parse_errors_never_hold_the_password(
        pw: str, other: str, template: str) -> None:
    from urllib.parse import quote

    from tiervault.errors import UsageError
    from tiervault.storage.urls import ENCODE_HINT, cleartext_warning, parse_url, redact

    url, url2 = (template.format(quote(p, safe="")) for p in (pw, other))
    # Percent-encoded as a user must: it parses back, and nothing shown depends on it.
    assert parse_url(url).password == pw
    assert redact(url) == redact(url2)
    assert cleartext_warning(url) == cleartext_warning(url2)
    assert quote(pw, safe="") not in redact(url).replace("***", "") or \
        quote(pw, safe="") in template
    # Typed without encoding: parse_url fails with its own one-line error or succeeds,
    # and neither the error nor the redacted URL shows the password.
    raw = template.format(pw)
    shown = [redact(raw)]
    try:
        parse_url(raw)
    except UsageError as e:
        assert "\n" not in str(e)
        assert str(e).startswith(("invalid", "no host", "unsupported", "file://")), str(e)
        shown.append(str(e).replace(ENCODE_HINT, ""))  # the hint lists / ? # [ ] ... itself
    filler = template.format("")
    for text in shown:
        if len(pw) >= 3 and pw not in filler and pw not in redact(filler):
            assert pw not in text, (raw, text)


@settings(max_examples=400, deadline=None)
@given(scheme=st.sampled_from(["ftp", "ftps", "sftp", "s3", "file", "http"]),
       rest=st.text(max_size=60) | st.text(alphabet="[]@:/?#%&=u1.", max_size=30))
def test_parse_url_raises_only_its_own_one_line_error(scheme: str, rest: str) -> None:
    from tiervault.errors import UsageError
    from tiervault.storage.urls import parse_url, redact

    url = f"{scheme}://{rest}"
    assert isinstance(redact(url), str)
    try:
        parse_url(url)
    except UsageError as e:
        assert "\n" not in str(e) and str(e)


@pytest.mark.parametrize("url", ["ftp://user:pw@ho[st:21/x", "sftp://[::1/vault",
                                 "ftp://user:pw@host]:21/x", "s3://b[ucket/p"])
def test_a_bracket_in_the_host_is_a_one_line_error(url: str) -> None:
    from tiervault.errors import UsageError
    from tiervault.storage.urls import parse_url

    with pytest.raises(UsageError, match="invalid tier URL") as e:
        parse_url(url)
    assert "pw" not in str(e.value)
