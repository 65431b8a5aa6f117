"""Content-defined chunking (FastCDC, compiled) with a keyed gear table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pyfastcdc.cy import FastCDC

# Average ~1 MiB (pyfastcdc's effective average is avg + min).
MIN_SIZE = 512 * 1024
AVG_SIZE = 1024 * 1024
MAX_SIZE = 4 * 1024 * 1024  # pyfastcdc buffers 2x this per stream: bounds memory


@dataclass(frozen=True)
class ChunkerParams:
    """Chunk size bounds, recorded in the vault config so all writers agree."""

    min_size: int = MIN_SIZE
    avg_size: int = AVG_SIZE
    max_size: int = MAX_SIZE


class Chunker:
    """Cuts byte streams into content-defined chunks; one instance per thread."""

    def __init__(self, params: ChunkerParams, seed: int) -> None:
        self.params = params
        self._cdc = FastCDC(params.avg_size, min_size=params.min_size,
                            max_size=params.max_size, seed=seed)

    def chunks(self, stream: BinaryIO) -> Iterator[memoryview]:
        """Yield chunk views; each is valid only until the next one is produced."""
        for c in self._cdc.cut_stream(stream):
            yield c.data

    def chunks_of(self, data: bytes | memoryview) -> Iterator[memoryview]:
        """Chunks of an in-memory buffer (views into it)."""
        for c in self._cdc.cut_buf(data):
            yield c.data
