"""The project's pyftpdlib test server, with two fixes for benchmarking.

1. pyftpdlib answers ``MLSD missing/`` with 501 where vsftpd and proftpd answer
   550 (see BENCH-NOTES.md). tiervault accepts both, but rclone 1.60 takes the
   501 as a hard error and cannot create directories on it: answer 550.
2. pyftpdlib's ``CWD`` checks a directory by ``os.chdir`` into it and back, with
   the *process* working directory: in the threaded server two concurrent CWDs
   can leave the process inside a client's directory, and once that directory
   is deleted every later CWD fails (``FileNotFoundError`` from ``os.getcwd``,
   the client sees the connection drop). Check the directory without chdir.

The benchmark runs this variant for every tool: same server, same process.

Same arguments as ``tests/servers/ftp_server.py``::

    python bench/ftp_server.py --root DIR --port N --user U --password P
"""

from __future__ import annotations

import os
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


def _ftp_cwd(self: Any, path: str) -> Any:
    if not self.fs.isdir(path) or not os.access(path, os.X_OK):
        self.respond("550 No such directory.")
        return None
    self.fs.cwd = self.fs.fs2ftp(path)
    self.respond(f'250 "{self.fs.cwd}" is the current directory.')
    return path


FTPHandler.ftp_MLSD = _ftp_mlsd
FTPHandler.ftp_CWD = _ftp_cwd

if __name__ == "__main__":
    main()
