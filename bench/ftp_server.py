"""The project's pyftpdlib test server, answering 550 for MLSD of a missing directory.

pyftpdlib answers ``MLSD missing/`` with 501 where vsftpd and proftpd answer 550
(see BENCH-NOTES.md). tiervault accepts both, but rclone 1.60 takes the 501 as
a hard error and cannot create directories on it, so the benchmark runs this
variant for every tool: same server, same process, vsftpd-like answers.

Same arguments as ``tests/servers/ftp_server.py``::

    python bench/ftp_server.py --root DIR --port N --user U --password P
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyftpdlib.handlers import FTPHandler
from tests.servers.ftp_server import main

_orig_mlsd = FTPHandler.ftp_MLSD


def _ftp_mlsd(self: Any, path: str) -> Any:
    if not self.fs.isdir(path):
        self.respond("550 No such directory.")
        return None
    return _orig_mlsd(self, path)


FTPHandler.ftp_MLSD = _ftp_mlsd

if __name__ == "__main__":
    main()
