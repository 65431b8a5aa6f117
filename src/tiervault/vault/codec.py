"""Blob encoding: a one-byte flag, then zstd or raw bytes; sealed with AES-GCM."""

from __future__ import annotations

import io
import threading

import zstandard

from tiervault.errors import IntegrityError
from tiervault.vault.crypto import MasterKey

RAW = 0
ZSTD = 1
ZSTD_LEVEL = 3
#: Largest plaintext blob we accept (chunker max is 8 MiB; trees may be larger).
MAX_BLOB = 64 * 1024 * 1024
#: Frames declaring up to this size are decompressed in one call (which
#: allocates the declared size); larger ones are streamed.
_ONE_SHOT_MAX = 16 * 1024 * 1024
_STREAM_PIECE = 4 * 1024 * 1024


class Codec:
    """Compress-then-encrypt for blobs; thread-safe (compressors per thread)."""

    def __init__(self, key: MasterKey, level: int = ZSTD_LEVEL) -> None:
        self.key = key
        self.level = level
        self._local = threading.local()

    def _cctx(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = zstandard.ZstdCompressor(level=self.level)
        return c

    def _dctx(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def compress(self, data: bytes | memoryview) -> bytes:
        """Flag byte + zstd frame, or flag + raw when compression does not pay."""
        n = len(data)
        if n >= 64:
            comp = self._cctx().compress(data)
            # Skip compression for incompressible data (random, already compressed).
            if len(comp) < n - n // 32:
                return b"\x01" + comp
        return b"\x00" + bytes(data)

    def decompress(self, payload: bytes, raw_len: int | None, what: str,
                   limit: int = MAX_BLOB) -> bytes:
        """Inverse of ``compress``; output bounded by ``raw_len`` (or ``limit``)."""
        if not payload:
            raise IntegrityError(f"{what} is damaged (empty)")
        flag = payload[0]
        body = memoryview(payload)[1:]
        if raw_len is not None:
            limit = raw_len
        if flag == RAW:
            out = bytes(body)
        elif flag == ZSTD:
            try:
                params = zstandard.get_frame_parameters(body)
                if params.content_size > limit:
                    raise IntegrityError(f"{what} is damaged (size)")
                if params.content_size <= _ONE_SHOT_MAX:
                    out = self._dctx().decompress(body, max_output_size=limit)
                else:
                    # One-shot decompression allocates the declared size up front,
                    # so a few bytes declaring 500 MiB would allocate 500 MiB:
                    # stream, so memory follows the data actually produced.
                    out = self._stream(body, params.content_size, what)
            except zstandard.ZstdError:
                raise IntegrityError(f"{what} is damaged (compression)") from None
        else:
            raise IntegrityError(f"{what} is damaged (unknown encoding {flag})")
        if raw_len is not None and len(out) != raw_len:
            raise IntegrityError(f"{what} is damaged (length)")
        return out

    def _stream(self, body: memoryview, size: int, what: str) -> bytes:
        """Decompress a frame of declared ``size`` in pieces; exactly ``size`` bytes or damage."""
        out = io.BytesIO()
        got = 0
        with self._dctx().stream_reader(body, read_across_frames=False) as reader:
            while got < size:
                piece = reader.read(min(_STREAM_PIECE, size - got))
                if not piece:
                    break
                got += out.write(piece)
            if got != size or reader.read(1):
                raise IntegrityError(f"{what} is damaged (length)")
        return out.getvalue()

    def encode(self, data: bytes | memoryview, aad: bytes) -> bytes:
        """Compress and seal ``data``."""
        return self.key.seal(self.compress(data), aad)

    def decode(self, sealed: bytes | memoryview, aad: bytes, raw_len: int | None,
               what: str) -> bytes:
        """Open and decompress; IntegrityError naming ``what`` on any damage."""
        return self.decompress(self.key.open(sealed, aad, what), raw_len, what)
