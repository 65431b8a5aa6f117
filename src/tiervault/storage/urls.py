"""Tier URLs: parsing them into backends, and printing them without secrets.

Forms: ``/path`` or ``file:///path``; ``ftp://user:pass@host:port/path``;
``ftps://...`` (explicit TLS); ``sftp://user:pass@host:port/path``;
``s3://bucket/prefix?endpoint=URL&region=R``. Query options: ``ca_file``,
``insecure=1``, ``known_hosts``, ``key_file``, ``timeout``, ``path_style``.
Secrets may also come from the config file or environment (see README).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from tiervault.errors import UsageError
from tiervault.storage.base import Backend

_SECRET_PARAMS = {"secret_key", "password", "secret"}


@dataclass
class TierUrl:
    """A parsed tier URL."""

    scheme: str
    host: str = ""
    port: int | None = None
    user: str | None = None
    password: str | None = None
    path: str = ""
    params: dict[str, str] = field(default_factory=dict)
    raw: str = ""

    def redacted(self) -> str:
        """The URL with any password or secret replaced by ``***``."""
        return redact(self.raw)


def parse_url(url: str) -> TierUrl:
    """Parse a tier URL or local path."""
    if "://" not in url:
        if not url:
            raise UsageError("empty tier URL")
        return TierUrl("file", path=os.path.abspath(os.path.expanduser(url)), raw=url)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced [ ] (IPv6 brackets)
        raise UsageError(f"invalid tier URL {redact(url)}: not a URL (a host in [ ] must be "
                         f"an IPv6 address){ENCODE_HINT}") from None
    hint = ENCODE_HINT if _garbled(url) else ""
    scheme = parts.scheme.lower()
    params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UsageError("file:// URLs must name a local path (file:///path)")
        if not parts.path:
            raise UsageError("file:// URLs must name a local path (file:///path)")
        return TierUrl("file", path=unquote(parts.path), params=params, raw=url)
    if scheme not in ("ftp", "ftps", "sftp", "s3"):
        raise UsageError(f"unsupported tier URL scheme {scheme!r} in {redact(url)}")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"invalid port in {redact(url)}{hint}") from None
    if not parts.hostname:
        raise UsageError(f"no host (or bucket) in {redact(url)}{hint}")
    if hint:
        raise UsageError(f"invalid tier URL {redact(url)}{hint}")
    return TierUrl(scheme, parts.hostname, port,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password is not None else None,
                   unquote(parts.path), params, url)


def normalize_url(url: str) -> str:
    """The form of a tier URL to store: local paths made absolute.

    A relative path (``relative/dir``, ``~/vault``) is resolved against the
    working directory *now*: stored as typed, it would name another place from
    any other directory (a service runs in ``/``). ``file://`` URLs always
    carry an absolute path; other URLs are kept as given.
    """
    u = parse_url(url)
    if u.scheme != "file":
        return url
    if "://" not in url:
        return os.path.normpath(u.path)
    return url


def is_relative_path(url: str) -> bool:
    """True for a local tier written as a relative path (from an old config)."""
    return "://" not in url and not os.path.isabs(os.path.expanduser(url))


_DEFAULT_PORTS = {"ftp": 21, "ftps": 21, "sftp": 22}


def _identity(u: TierUrl) -> tuple[object, ...]:
    path = os.path.normpath(u.path) if u.scheme == "file" else (u.path.rstrip("/") or "/")
    params = sorted((k, v) for k, v in u.params.items() if k.lower() not in _SECRET_PARAMS)
    return (u.scheme, u.host.lower(), u.port or _DEFAULT_PORTS.get(u.scheme), u.user or "",
            path, params)


def same_tier(a: str, b: str) -> bool:
    """True if two URLs name the same tier, whatever their passwords say.

    A password may be in the URL, masked (``***``, as every message prints it),
    or kept in ``[credentials]``: none of that changes which tier is meant.
    """
    try:
        return _identity(parse_url(a)) == _identity(parse_url(b))
    except UsageError:
        return False


def tier_index(tiers: list[str], ref: str) -> int | None:
    """The 0-based position of the tier ``ref`` names: its 1-based number or a URL."""
    if ref.strip().isdigit():
        i = int(ref) - 1
        return i if 0 <= i < len(tiers) else None
    for i, u in enumerate(tiers):
        if u == ref or redact(u) == redact(ref) or same_tier(u, ref):
            return i
    return None


_MASK = "***"


def _userinfo_end(rest: str) -> int:
    """Where the user-info of ``rest`` (a URL after ``://``) ends (its ``@``), or -1.

    A well-formed URL's user-info is the authority up to its last ``@``. A
    password typed without percent-encoding may hold ``/ ? #`` (which end the
    authority) and more ``@``: then, if a ``:`` comes before the last ``@``,
    everything up to that ``@`` is taken as user-info, so that it is masked.
    """
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, last = rest[:cut], rest.rfind("@")
    if last < 0:
        return -1
    if last < cut:
        return last
    own = netloc.rfind("@")
    if own >= 0 and ":" not in netloc[:own]:
        return own  # ``user@host/path@x``: the later @ is the path's, no password
    return last if ":" in rest[:last] else own


def _garbled(url: str) -> bool:
    """True if ``url`` seems to hold a user name or password that is not percent-encoded."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    return _userinfo_end(rest) >= cut or "[" in rest[:max(0, _userinfo_end(rest))]


ENCODE_HINT = ("; characters such as / ? # @ : [ ] % in a user name or password must be "
                "percent-encoded (%2F %3F %23 %40 %3A %5B %5D %25)")


def redact(url: str) -> str:
    """``url`` with its password (and secret query values) replaced by ``***``.

    Never raises, and masks the password whatever characters it holds, even
    ones the user forgot to percent-encode (more is masked then, never less).
    Control characters are escaped, so that a message holding it is one line.
    """
    if "://" not in url:
        return _printable(url)
    scheme, rest = url.split("://", 1)
    at = _userinfo_end(rest)
    userinfo, tail = (rest[:at], rest[at + 1:]) if at >= 0 else (None, rest)
    if userinfo is not None and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":" + _MASK
    tail = tail.split("#", 1)[0]
    base, sep, query = tail.partition("?")
    if sep:
        parts = []
        for item in query.split("&"):
            key = unquote(item.split("=", 1)[0]).lower()
            parts.append(f"{item.split('=', 1)[0]}={_MASK}" if key in _SECRET_PARAMS else item)
        base += "?" + "&".join(parts)
    return _printable(f"{scheme}://{'' if userinfo is None else userinfo + '@'}{base}")


def _printable(text: str) -> str:
    """Control characters and line breaks escaped (``\\n``): a message stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def cleartext_warning(url: str) -> str | None:
    """A warning for a tier reached without encryption on the wire, else None.

    Plain ``ftp://`` sends the login and every file in clear, and so does an S3
    ``endpoint=http://...``. Loopback hosts get the warning too (a test server
    or a tunnel: the user can tell, the program cannot).
    """
    try:
        u = parse_url(url)
    except UsageError:
        return None
    if u.scheme == "ftp":
        what = "plain FTP"
    elif u.scheme == "s3" and u.params.get("endpoint", "").lower().startswith("http://"):
        what = "an http:// S3 endpoint"
    else:
        return None
    return (f"tier {redact(url)} uses {what}: credentials and data travel in clear on the "
            "network (anyone on the path can read the password and change files); use "
            f"{'ftps://' if u.scheme == 'ftp' else 'an https:// endpoint'} or sftp:// if the "
            "server offers it")


def _flag(v: str | None) -> bool:
    return (v or "").lower() in ("1", "true", "yes", "on")


def open_backend(url: str, env: dict[str, str] | None = None,
                 secrets: dict[str, str] | None = None) -> Backend:
    """Build the raw backend for one tier URL.

    ``secrets`` maps option names (``password``, ``secret_key``, ``access_key``)
    to values from the config file; ``env`` supplies fallbacks.
    """
    env = env if env is not None else dict(os.environ)
    secrets = secrets or {}
    u = parse_url(url)
    try:
        timeout = float(u.params.get("timeout", "30"))
    except ValueError:
        raise UsageError(f"invalid timeout in {redact(url)}; give seconds, e.g. "
                         "timeout=30") from None
    if u.scheme == "file":
        from tiervault.storage.local import LocalBackend

        return LocalBackend(u.path)
    password = u.password or secrets.get("password")
    if u.scheme in ("ftp", "ftps"):
        from tiervault.storage.ftp import FtpBackend

        password = password or env.get("TIERVAULT_FTP_PASSWORD", "")
        return FtpBackend(u.host, u.port or 21, u.user or "anonymous", password or "",
                          u.path or "/", tls=u.scheme == "ftps", ca_file=u.params.get("ca_file"),
                          insecure=_flag(u.params.get("insecure")), timeout=timeout)
    if u.scheme == "sftp":
        from tiervault.storage.sftp import SftpBackend

        password = password or env.get("TIERVAULT_SFTP_PASSWORD")
        path = u.path[1:] if u.path.startswith("/~/") else u.path
        return SftpBackend(u.host, u.port or 22, u.user, password, path or ".",
                           key_file=u.params.get("key_file"),
                           known_hosts=u.params.get("known_hosts"), timeout=timeout)
    from tiervault.storage.s3 import S3Backend

    access = u.params.get("access_key") or u.user or secrets.get("access_key") or \
        env.get("AWS_ACCESS_KEY_ID")
    secret = u.params.get("secret_key") or password or secrets.get("secret_key") or \
        env.get("AWS_SECRET_ACCESS_KEY")
    return S3Backend(u.host, u.path.strip("/"), endpoint=u.params.get("endpoint"),
                     region=u.params.get("region"), access_key=access, secret_key=secret,
                     path_style=u.params.get("path_style", "1") != "0",
                     ca_file=u.params.get("ca_file"), insecure=_flag(u.params.get("insecure")),
                     timeout=timeout)
