"""The backend contract and S3 specifics against a real moto server subprocess."""

from __future__ import annotations

import os
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from tests.backend_contract import BackendContract, Planter
from tests.servers.s3_server import ACCESS_KEY, REGION, SECRET_KEY, MotoServerProcess, free_port
from tiervault.errors import (
    BackendError,
    IntegrityError,
    NotFoundError,
    PermanentError,
    TransientError,
    UsageError,
)
from tiervault.storage.base import WRITER_TOKEN, Backend, FileType, Handle
from tiervault.storage.s3 import S3Backend, _classify

MiB = 1024 * 1024
# Distinctive, so a leak is unmistakable in any string.
LEAKY_SECRET = "Sup3rS3cretValue-d0-n0t-l3ak-9f8e7d"


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServerProcess]:
    with MotoServerProcess() as s:
        yield s


def _bucket() -> str:
    return f"tv-{uuid.uuid4().hex[:16]}"


def _make(server: MotoServerProcess, bucket: str | None = None, **kw: Any) -> S3Backend:
    args: dict[str, Any] = {
        "prefix": "vault", "endpoint": server.endpoint, "region": REGION,
        "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "timeout": 10.0}
    args.update(kw)
    return S3Backend(bucket or _bucket(), **args)


def _raw(server: MotoServerProcess) -> Any:
    """A plain boto3 client, to look at the bucket behind the backend's back."""
    return boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)


@pytest.fixture
def backend(server: MotoServerProcess) -> Iterator[Backend]:
    b = _make(server)  # a fresh bucket per test
    b.create()
    yield b
    b.close()


@pytest.fixture
def plant_temporary(server: MotoServerProcess, backend: S3Backend) -> Planter:
    """An open multipart upload with one part: a killed writer's (or, for this
    process's token, one this backend has in flight)."""
    raw = _raw(server)

    def plant(h: Handle, token: str) -> Callable[[], bool]:
        key = f"vault/{h.path()}"
        up = raw.create_multipart_upload(Bucket=backend.bucket, Key=key)["UploadId"]
        raw.upload_part(Bucket=backend.bucket, Key=key, UploadId=up, PartNumber=1,
                        Body=os.urandom(1000))
        if token == WRITER_TOKEN:
            backend._uploading[key] = 1  # as save() marks an upload in flight
        else:
            # Begun before this backend (this process) existed.
            backend._born = time.time() + 10

        def there() -> bool:
            ups = raw.list_multipart_uploads(Bucket=backend.bucket).get("Uploads", [])
            return any(u["UploadId"] == up for u in ups)

        return there

    return plant


@pytest.fixture
def unreachable() -> S3Backend:
    return S3Backend("nobucket", endpoint=f"http://127.0.0.1:{free_port()}", region=REGION,
                     access_key=ACCESS_KEY, secret_key=SECRET_KEY, timeout=2.0)


class TestS3(BackendContract):
    pass


def test_multipart_roundtrip(server: MotoServerProcess) -> None:
    b = _make(server, multipart_threshold=8 * MiB)
    b.create()
    data = os.urandom(20 * MiB)
    h = Handle(FileType.PACK, "cd" * 32)
    b.save(h, data)
    # A multipart object's ETag ends in "-<parts>": 8 + 8 + 4 MiB.
    etag = _raw(server).head_object(Bucket=b.bucket, Key=f"vault/{h.path()}")["ETag"]
    assert etag.strip('"').endswith("-3")
    assert b.stat(h).size == len(data)
    assert b.load(h) == data
    cross = 8 * MiB - 100  # a range spanning a part boundary
    assert b.load(h, cross, 200) == data[cross:cross + 200]


def test_small_save_is_single_put(backend: S3Backend, server: MotoServerProcess) -> None:
    h = Handle(FileType.INDEX, "ab")
    backend.save(h, b"x" * 1000)
    etag = _raw(server).head_object(Bucket=backend.bucket, Key=f"vault/{h.path()}")["ETag"]
    assert "-" not in etag


def test_load_past_end(backend: S3Backend) -> None:
    h = Handle(FileType.INDEX, "ab")
    backend.save(h, b"0123456789")
    assert backend.load(h, 10) == b""  # like reading at EOF of a file
    assert backend.load(h, 3, 0) == b""
    with pytest.raises(IntegrityError):
        backend.load(h, 10, 1)
    with pytest.raises(IntegrityError):
        backend.load(h, 50, 5)
    with pytest.raises(NotFoundError):
        backend.load(Handle(FileType.INDEX, "cd"), 0, 0)


def test_prefix_isolation_and_foreign_names(server: MotoServerProcess) -> None:
    bucket = _bucket()
    a = _make(server, bucket, prefix="a")
    b = _make(server, bucket, prefix="/b/nested/")
    a.create()
    b.create()
    a.save(Handle(FileType.INDEX, "aa"), b"1")
    b.save(Handle(FileType.INDEX, "bb"), b"22")
    raw = _raw(server)
    for junk in ("a/index/not-hex", "a/index/", "a/index/aa/deeper", "a/indexes/ab",
                 "a/data/ab", "a/data/zz/abcd"):
        raw.put_object(Bucket=bucket, Key=junk, Body=b"junk")
    raw.put_object(Bucket=bucket, Key="a/data/ab/abcd", Body=b"pack")
    assert [(fi.handle.name, fi.size) for fi in a.list(FileType.INDEX)] == [("aa", 1)]
    assert [fi.handle.name for fi in a.list(FileType.PACK)] == ["abcd"]
    assert [fi.handle.name for fi in b.list(FileType.INDEX)] == ["bb"]
    assert raw.head_object(Bucket=bucket, Key="b/nested/index/bb")["ContentLength"] == 2
    assert b.location == f"s3://{bucket}/b/nested?endpoint={server.endpoint}&region={REGION}"


def test_list_paginates(backend: S3Backend) -> None:
    # More than one page of ListObjectsV2 (1000 keys per page).
    names = {f"{i:04x}" for i in range(1100)}
    with ThreadPoolExecutor(8) as pool:  # also a workout for the shared client
        list(pool.map(lambda n: backend.save(Handle(FileType.SNAPSHOT, n), b""), names))
    assert {fi.handle.name for fi in backend.list(FileType.SNAPSHOT)} == names


def test_missing_bucket_is_unreachable(server: MotoServerProcess) -> None:
    b = _make(server)  # never created
    h = Handle(FileType.INDEX, "ab")
    with pytest.raises(TransientError, match="bucket"):
        b.probe()
    for op in (lambda: b.load(h), lambda: b.load(h, 1, 2), lambda: b.stat(h),
               lambda: b.save(h, b"x"), lambda: b.remove(h),
               lambda: list(b.list(FileType.INDEX)), lambda: list(b.list(FileType.CONFIG)),
               lambda: b.save(Handle(FileType.PACK, "ab" * 32), os.urandom(9 * MiB))):
        with pytest.raises(TransientError):
            op()
    b.create()
    b.create()  # idempotent
    b.probe()
    b.save(h, b"x")
    assert b.load(h) == b"x"


def test_killed_server_is_transient_then_recovers() -> None:
    with MotoServerProcess() as srv:
        b = _make(srv, timeout=3.0)
        b.create()
        h = Handle(FileType.INDEX, "ab")
        b.save(h, b"before")
        srv.kill()
        for op in (b.probe, lambda: b.load(h), lambda: b.stat(h), lambda: b.save(h, b"x"),
                   lambda: b.remove(h), lambda: list(b.list(FileType.INDEX))):
            with pytest.raises(TransientError):
                op()
        srv.start()  # same port, but moto forgot everything
        with pytest.raises(TransientError, match="bucket"):
            b.probe()
        b.create()
        b.save(h, b"after")  # the same backend object (and client) works again
        assert b.load(h) == b"after"


def test_close_then_reuse(backend: S3Backend) -> None:
    h = Handle(FileType.INDEX, "ab")
    backend.save(h, b"x")
    backend.close()
    backend.close()
    assert backend.load(h) == b"x"


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


def test_secret_never_shown(server: MotoServerProcess) -> None:
    seen: list[BaseException] = []
    b = _make(server, secret_key=LEAKY_SECRET)
    assert LEAKY_SECRET not in b.location + repr(b) + str(vars(b).get("location"))
    with pytest.raises(TransientError) as ei:  # bucket missing
        b.stat(Handle(FileType.CONFIG))
    seen.append(ei.value)
    b.create()
    with pytest.raises(NotFoundError) as nf:
        b.load(Handle(FileType.CONFIG))
    seen.append(nf.value)
    with pytest.raises(UsageError) as ue:  # credentials belong in their own fields
        S3Backend("x", endpoint=f"http://u:{LEAKY_SECRET}@127.0.0.1:9")
    seen.append(ue.value)
    dead = S3Backend("x", endpoint=f"http://127.0.0.1:{free_port()}",
                     access_key=ACCESS_KEY, secret_key=LEAKY_SECRET, timeout=1.0)
    with pytest.raises(TransientError) as ei:
        dead.probe()
    seen.append(ei.value)
    # A server that checks credentials refuses an unknown key: PermanentError.
    with MotoServerProcess(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as auth:
        strict = _make(auth, "some-bucket", access_key="AKIAUNKNOWN0000000000",
                       secret_key=LEAKY_SECRET)
        with pytest.raises(PermanentError) as pe:
            strict.save(Handle(FileType.INDEX, "ab"), b"x")
        seen.append(pe.value)
        with pytest.raises(PermanentError):
            strict.create()
    for exc in seen:
        assert LEAKY_SECRET not in _all_text(exc)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_verified_by_default() -> None:
    with MotoServerProcess(tls=True) as srv:
        strict = _make(srv, timeout=5.0)
        assert srv.endpoint.startswith("https://")
        with pytest.raises(PermanentError, match="CERTIFICATE_VERIFY_FAILED"):
            strict.create()
        lax = _make(srv, strict.bucket, insecure=True, timeout=5.0)
        lax.create()
        lax.save(Handle(FileType.INDEX, "ab"), b"tls")
        assert lax.load(Handle(FileType.INDEX, "ab")) == b"tls"


def _client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "m"},
                     "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "Op")


@pytest.mark.parametrize(("exc", "expected"), [
    (_client_error("NoSuchKey", 404), NotFoundError),
    (_client_error("404", 404), NotFoundError),
    (_client_error("NoSuchBucket", 404), TransientError),
    (_client_error("SlowDown", 503), TransientError),
    (_client_error("ServiceUnavailable", 503), TransientError),
    (_client_error("InternalError", 500), TransientError),
    (_client_error("RequestTimeout", 400), TransientError),
    (_client_error("", 502), TransientError),
    (_client_error("AccessDenied", 403), PermanentError),
    (_client_error("InvalidAccessKeyId", 403), PermanentError),
    (_client_error("SignatureDoesNotMatch", 403), PermanentError),
    (_client_error("InvalidArgument", 400), PermanentError),
    (EndpointConnectionError(endpoint_url="http://x"), TransientError),
    (ReadTimeoutError(endpoint_url="http://x"), TransientError),
])
def test_error_table(exc: Exception, expected: type[BackendError]) -> None:
    # Only the status/code table; the real paths are covered against moto above.
    assert _classify(exc) is expected


def test_reads_are_bounded_when_the_server_ignores_range(server: MotoServerProcess) -> None:
    """A server that answers a ranged GET with the whole object: the client reads
    only up to what it asked for (or the bound), never the whole body blindly."""
    from tests.servers.s3_fault_proxy import S3FaultProxy
    from tiervault.errors import IntegrityError

    with S3FaultProxy(server.endpoint, rate=0.0) as proxy:
        b = _make(server, endpoint=proxy.endpoint)
        b.create()
        data = os.urandom(3 * MiB)
        h = Handle(FileType.PACK, "ef" * 32)
        b.save(h, data)
        proxy.ignore_range = True
        raw = boto3.client("s3", endpoint_url=proxy.endpoint, region_name=REGION,
                           aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        whole = raw.get_object(Bucket=b.bucket, Key=f"vault/{h.path()}", Range="bytes=0-9")
        assert "ContentRange" not in whole and whole["ContentLength"] == len(data)
        assert b.load(h, 1000, 5000) == data[1000:6000]
        assert b.load(h, 2 * MiB) == data[2 * MiB:]
        with pytest.raises(IntegrityError, match="larger than its bound"):
            b.load(h, 1000, max_size=MiB)
        rev = Handle(FileType.REVISION)
        b.save(rev, b"9" * 1000)
        with pytest.raises(IntegrityError, match="larger than its bound of 64 bytes"):
            b.load(rev)

