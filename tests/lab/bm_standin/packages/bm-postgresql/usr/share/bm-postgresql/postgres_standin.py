# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""TEST DOUBLE of PostgreSQL as BlueMind uses it, for the lab only.

Run by the stand-in postgresql.service (package bm-postgresql). Like a postmaster, it
keeps its data directory busy for as long as it runs (working directory and an open
descriptor: a filesystem under it cannot be unmounted) and writes postmaster.pid
there, removed on a clean stop (SIGTERM, exit 0). The "database" itself is the file
bluemind.db that the stand-in bm-core appends to.

Environment: BM_STANDIN_DB_DIR, the data directory (/var/lib/postgresql).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys

PID_NAME = "postmaster.pid"
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def main() -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    data = os.environ.get("BM_STANDIN_DB_DIR", "/var/lib/postgresql")
    os.makedirs(data, exist_ok=True)
    os.chdir(data)
    held = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    pidfile = os.path.join(data, PID_NAME)
    with open(pidfile, "w", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n{data}\n")
    sys.stderr.write(f"postgresql stand-in: pid {os.getpid()}, data directory {data}\n")
    sys.stderr.flush()
    signal.sigwait(STOP_SIGNALS)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pidfile)
    os.close(held)
    return 0


if __name__ == "__main__":
    sys.exit(main())
