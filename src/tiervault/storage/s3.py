"""A vault in an S3 bucket: AWS, MinIO, Ceph RGW, Backblaze B2 or any S3-compatible store.

Objects are named ``<prefix>/<handle path>``. S3 has no directories, so the
vault "root" is the bucket: a missing bucket makes the tier unreachable
(``TransientError``), exactly like an unplugged disk for the local backend.
Single PUTs and completed multipart uploads are atomic in S3, which gives the
contract's atomic ``save`` without temporary names; the "temporaries" are
multipart uploads left open by a writer that died, which ``remove_temporaries``
aborts (they are invisible, but the provider stores and bills their parts).
"""

from __future__ import annotations

import builtins
import io
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from tiervault.errors import (
    BackendError,
    IntegrityError,
    NotFoundError,
    PermanentError,
    TransientError,
    UsageError,
)
from tiervault.storage.base import (
    SINGLETONS,
    Backend,
    FileInfo,
    FileType,
    Handle,
    handle_from_path,
    read_bound,
    too_large,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

#: Number of threads the engine runs against one backend.
_WORKER_THREADS = 8
#: Parts of one multipart upload sent in parallel.
_PART_CONCURRENCY = 4
# S3 refuses parts below 5 MiB (except the last one).
_MIN_PART = 5 * 1024 * 1024

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_BUCKET_MISSING_CODES = frozenset({"NoSuchBucket"})
# Server-side trouble that may well be gone on the next attempt.
_TRANSIENT_CODES = frozenset({
    "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling",
    "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "Busy",
    "OperationAborted",
})
_TRANSIENT_STATUS = frozenset({408, 429})
_READ_BLOCK = 1 << 20
# Seconds of slack between the server's clock (1 s resolution) and ours when
# telling an upload begun before this backend existed from one of its own.
_CLOCK_SLACK = 2.0


class S3Backend(Backend):
    """Files as objects in ``bucket`` under ``prefix``, through one shared boto3 client.

    ``endpoint`` selects an S3-compatible server (``https://minio.lan:9000``);
    ``path_style`` addresses buckets as ``endpoint/bucket`` which most
    self-hosted servers need. TLS certificates are verified unless
    ``insecure``; ``ca_file`` trusts a private CA. ``timeout`` bounds both
    connecting and each read. Saves of ``multipart_threshold`` bytes or more
    use a multipart upload.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        path_style: bool = True,
        ca_file: str | None = None,
        insecure: bool = False,
        timeout: float = 30.0,
        multipart_threshold: int = 8 * 1024 * 1024,
    ) -> None:
        if endpoint and urlsplit(endpoint).username is not None:
            # Deliberately not echoing the URL: it holds a password.
            raise UsageError("S3 credentials go in access_key/secret_key, "
                             "not in the endpoint URL")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.region = region
        self._access_key = access_key
        # For the client, and to scrub it from any message; never in location or errors.
        self._secret_key = secret_key
        self._path_style = path_style
        self._verify: bool | str = False if insecure else (ca_file or True)
        self._timeout = timeout
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(multipart_threshold, _MIN_PART),
            max_concurrency=_PART_CONCURRENCY,
            # The CRT client (if awscrt happens to be installed) would bypass our
            # client's endpoint, timeouts and TLS settings.
            preferred_transfer_client="classic",
        )
        self._threshold = multipart_threshold
        self._client: S3Client | None = None
        self._lock = threading.Lock()
        self.location = _location(bucket, self.prefix, endpoint, region)
        # Keys with a multipart upload of ours in flight, and when we started
        # (local clock): remove_temporaries never aborts an upload of ours.
        self._uploading: dict[str, int] = {}
        self._born = time.time()

    # -- plumbing ---------------------------------------------------------

    def _s3(self) -> S3Client:
        """The shared client, made on first use (and again after ``close``)."""
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                config = Config(
                    region_name=self.region,
                    s3={"addressing_style": "path" if self._path_style else "auto"},
                    connect_timeout=self._timeout,
                    read_timeout=self._timeout,
                    # One attempt only: the tier layer retries with its own policy,
                    # and nested retries would multiply the wait on a dead server.
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    # Every worker thread may run a multipart upload of its own.
                    max_pool_connections=_WORKER_THREADS * _PART_CONCURRENCY,
                    # Newer boto3 sends CRC headers by default that several
                    # S3-compatible servers reject; packs carry their own MACs.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                # A private session: boto3's default session is not thread-safe.
                session = boto3.session.Session(
                    aws_access_key_id=self._access_key,
                    aws_secret_access_key=self._secret_key,
                    region_name=self.region,
                )
                self._client = session.client(
                    "s3", endpoint_url=self.endpoint, verify=self._verify, config=config)
            return self._client

    def _key(self, h: Handle) -> str:
        return f"{self.prefix}/{h.path()}" if self.prefix else h.path()

    def _scrub(self, text: str) -> str:
        if self._secret_key:
            text = text.replace(self._secret_key, "***")
        return text

    def _translate(self, exc: Exception, what: str) -> BackendError:
        """Map a boto3/botocore failure to the contract's error classes."""
        where = f"{what} on {self.location}"
        err = _classify(exc)
        # A HEAD response has no body, so a 404 there may mean "no bucket";
        # NoSuchKey (from GET) already says the bucket exists.
        ambiguous = not (isinstance(exc, ClientError) and _code(exc) == "NoSuchKey")
        if err is NotFoundError and ambiguous and not self._bucket_exists():
            err = TransientError
            detail = self._gone()
        elif isinstance(exc, ClientError) and _code(exc) in _BUCKET_MISSING_CODES:
            detail = self._gone()
        else:
            detail = _describe(exc)
        return err(self._scrub(f"{where}: {detail}"))

    def _gone(self) -> str:
        # Said in full: a bare "NoSuchBucket" does not tell a user that the
        # vault itself is gone from this tier, nor how to rebuild it.
        return (f"bucket {self.bucket!r} is not there: the vault is gone from this tier; to "
                "rebuild it there, re-add the tier ('tiervault tier remove N', then "
                "'tiervault tier add URL': this creates the bucket and refills it)")

    def _bucket_exists(self) -> bool:
        """Tell "no such object" from "no such bucket" after a bare 404 from HEAD.

        Raises the translated error if the bucket cannot even be asked about.
        """
        try:
            self._s3().head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if _classify(e) is NotFoundError:
                return False
            raise self._error(e, f"bucket {self.bucket!r}") from e
        except (BotoCoreError, OSError) as e:
            raise self._error(e, f"bucket {self.bucket!r}") from e
        return True

    def _error(self, exc: Exception, what: str) -> BackendError:
        """Translate without the bucket check (used by the bucket check itself)."""
        err = _classify(exc)
        if err is NotFoundError:
            err = TransientError
        return err(self._scrub(f"{what} on {self.location}: {_describe(exc)}"))

    # -- the contract -----------------------------------------------------

    def create(self) -> None:
        """Create the bucket if missing; S3 needs no directories."""
        s3 = self._s3()
        try:
            if self._bucket_exists():
                return
        except TransientError:
            raise
        except BackendError:
            pass  # e.g. HEAD forbidden: let CreateBucket give the real answer
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region and self.region != "us-east-1":
            # us-east-1 is the one region that refuses an explicit constraint.
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            s3.create_bucket(**kwargs)
        except ClientError as e:
            if _code(e) == "BucketAlreadyOwnedByYou":
                return
            raise self._error(e, f"bucket {self.bucket!r}") from e
        except (BotoCoreError, OSError) as e:
            raise self._error(e, f"bucket {self.bucket!r}") from e

    def save(self, h: Handle, data: bytes) -> None:
        """Upload ``data``; PUT and completed multipart uploads appear atomically."""
        s3 = self._s3()
        key = self._key(h)
        try:
            if len(data) >= self._threshold:
                # s3transfer aborts the multipart upload itself if a part fails,
                # so no half-written object ever becomes visible; one left open
                # by a killed process is aborted by remove_temporaries.
                with self._lock:
                    self._uploading[key] = self._uploading.get(key, 0) + 1
                try:
                    s3.upload_fileobj(io.BytesIO(data), self.bucket, key, Config=self._transfer)
                finally:
                    with self._lock:
                        self._uploading[key] -= 1
                        if not self._uploading[key]:
                            del self._uploading[key]
            else:
                s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError, OSError) as e:
            raise self._translate(e, str(h)) from e

    def load(self, h: Handle, offset: int = 0, length: int | None = None,
             max_size: int | None = None) -> bytes:
        """Fetch ``h`` or the range ``offset``/``length`` with an HTTP Range request.

        The body is read only up to the bound (``length``, else ``max_size`` or
        the type's), after checking ``Content-Length`` against it, even when the
        server ignores the Range and sends the whole object.
        """
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        bound = read_bound(h, length, max_size)
        if length == 0:
            self.stat(h)  # an empty range still requires the file to exist
            return b""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(h)}
        ranged = offset > 0 or length is not None
        if ranged:
            end = "" if length is None else str(offset + length - 1)
            kwargs["Range"] = f"bytes={offset}-{end}"
        try:
            resp = self._s3().get_object(**kwargs)
            body = resp["Body"]
            try:
                # A server that ignores Range sends the whole object (200, not 206).
                skip = offset if ranged and "ContentRange" not in resp else 0
                declared = resp.get("ContentLength")
                if length is None and declared is not None and int(declared) - skip > bound:
                    raise too_large(h, self.location, bound, int(declared) + offset - skip)
                data = _read_upto(body, skip + bound + 1)[skip:]
            finally:
                body.close()
        except ClientError as e:
            if _code(e) == "InvalidRange":
                # The range starts at or beyond the end of the object.
                if length is None:
                    return b""
                raise IntegrityError(
                    f"{h} on {self.location} is shorter than expected") from e
            raise self._translate(e, str(h)) from e
        except (BotoCoreError, OSError) as e:
            raise self._translate(e, str(h)) from e
        if len(data) > bound:
            if length is None:
                raise too_large(h, self.location, bound)
            data = data[:length]
        if length is not None and len(data) != length:
            raise IntegrityError(f"{h} on {self.location} is shorter than expected")
        return data

    def stat(self, h: Handle) -> FileInfo:
        """Size of ``h`` from a HEAD request."""
        try:
            resp = self._s3().head_object(Bucket=self.bucket, Key=self._key(h))
        except (BotoCoreError, ClientError, OSError) as e:
            raise self._translate(e, str(h)) from e
        return FileInfo(h, int(resp["ContentLength"]))

    def list(self, t: FileType) -> Iterator[FileInfo]:
        """Every object of type ``t`` under the prefix; foreign names are skipped."""
        if t in SINGLETONS:
            try:
                yield self.stat(Handle(t))
            except NotFoundError:
                pass
            return
        base = f"{self.prefix}/" if self.prefix else ""
        pages = self._s3().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{base}{t.value}/")
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj.get("Key", "")[len(base):]
                    h = handle_from_path(name)
                    if h is None or h.type is not t:
                        continue
                    yield FileInfo(h, int(obj.get("Size", 0)))
        except (BotoCoreError, ClientError, OSError) as e:
            raise self._translate(e, t.value) from e

    def remove(self, h: Handle) -> None:
        """Delete ``h``; S3 deletes are idempotent, so look first to report absence."""
        self.stat(h)
        try:
            self._s3().delete_object(Bucket=self.bucket, Key=self._key(h))
        except (BotoCoreError, ClientError, OSError) as e:
            raise self._translate(e, str(h)) from e

    def remove_temporaries(self) -> builtins.list[str]:
        """Abort the multipart uploads under the prefix that a dead writer left open.

        Ours are spared: those of keys this backend is uploading now, and any
        begun after it was made (by the server's clock, from its Date header),
        so only uploads of earlier processes (the write lock says they are
        gone) are aborted.
        """
        base = f"{self.prefix}/" if self.prefix else ""
        s3 = self._s3()
        aborted: list[str] = []
        try:
            resp = s3.list_multipart_uploads(Bucket=self.bucket, Prefix=base)
            date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
            # Our birth in the server's clock: its now, minus our age.
            server_now = parsedate_to_datetime(date).timestamp() if date else time.time()
            born = server_now - (time.time() - self._born) - _CLOCK_SLACK
            while True:
                for up in resp.get("Uploads", []):
                    key, upload_id = up.get("Key", ""), up.get("UploadId", "")
                    initiated = up.get("Initiated")
                    with self._lock:
                        ours = key in self._uploading
                    if ours or (initiated is not None and initiated.timestamp() >= born):
                        continue
                    s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                    aborted.append(f"{key[len(base):]} (multipart upload {upload_id[:16]})")
                if not resp.get("IsTruncated"):
                    break
                resp = s3.list_multipart_uploads(
                    Bucket=self.bucket, Prefix=base, KeyMarker=resp.get("NextKeyMarker", ""),
                    UploadIdMarker=resp.get("NextUploadIdMarker", ""))
        except (BotoCoreError, ClientError, OSError) as e:
            raise self._translate(e, "multipart uploads") from e
        return aborted

    def probe(self) -> None:
        """Reachable means: the server answers and the bucket is there."""
        if not self._bucket_exists():
            raise TransientError(f"{self.location}: {self._gone()}")

    def close(self) -> None:
        """Drop the client and its connection pool; the next call makes a new one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _read_upto(body: Any, n: int) -> bytes:
    """Up to ``n`` bytes of a streaming body (fewer only at its end)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        piece = body.read(min(n - got, _READ_BLOCK))
        if not piece:
            break
        parts.append(piece)
        got += len(piece)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _classify(exc: BaseException) -> type[BackendError]:
    """The contract error class for a boto3/botocore/socket failure."""
    if isinstance(exc, ClientError):
        code, status = _code(exc), _status(exc)
        if code in _BUCKET_MISSING_CODES:
            return TransientError  # the vault root is missing: unreachable
        if code in _NOT_FOUND_CODES or status == 404:
            return NotFoundError
        if code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS or status >= 500:
            return TransientError
        # 403 (AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch) and
        # every other 4xx: the server understood and refused.
        return PermanentError
    if isinstance(exc, SSLError):
        # A certificate that does not verify stays that way; other TLS
        # failures (a handshake cut short by a restart) are transport trouble.
        return PermanentError if "CERTIFICATE_VERIFY_FAILED" in str(exc) else TransientError
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return PermanentError
    if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError, OSError)):
        # Refused/reset connections, connect and read timeouts, bodies cut short.
        return TransientError
    if isinstance(exc, BotoCoreError):
        return PermanentError  # parameter validation and the like: a bug or bad config
    return TransientError


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code") or str(_status(exc))
        message = err.get("Message", "")
        return f"{code} {message}".strip()
    return str(exc) or type(exc).__name__


def _location(bucket: str, prefix: str, endpoint: str | None, region: str | None) -> str:
    """``s3://bucket/prefix?endpoint=...&region=...``, without credentials."""
    loc = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    query = []
    if endpoint:
        query.append(f"endpoint={quote(endpoint, safe=':/[]')}")
    if region:
        query.append(f"region={quote(region)}")
    return f"{loc}?{'&'.join(query)}" if query else loc
