# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""TEST DOUBLE of BlueMind's bm-core (the Java core server), for the lab only.

Installed by the stand-in package bm-core as /usr/share/bm-core/bm_core_server.py
and run by bm-core.service. It answers the few calls of BlueMind's API that the
roles and the lab checks use, with the same states as the real core:

    GET /api/system/installation/state    a JSON string:
        "CORE_STATE_STARTING"       for BM_CORE_STARTUP_DELAY seconds after start
        "CORE_STATE_NOT_INSTALLED"  until `bm-cli setup install` has run
        "CORE_STATE_RUNNING"        afterwards
    GET /api/system/installation/_infos   {"softwareVersion": ..., "releaseName": ...}
    GET /api/auth/ping                    200

and a test API for data that must survive a failover (not part of BlueMind):

    PUT /api/test/mail/NAME   store the body as SPOOL/NAME (fsync) and record it in
                              the "database" DB_DIR/bluemind.db (one JSON line, fsync);
                              503 unless the state is RUNNING
    GET /api/test/mail/NAME   the stored body, 404 if absent
    GET /api/test/mail        the names recorded in the database (JSON list)
    GET /api/test/mail?prefix=P   the stored bodies of the mail whose names start
                              with P, as a JSON object {name: body}: a client
                              reads back hundreds of writes in one request

The installation state lives with the data, as in the real product (where it is in
PostgreSQL): `bm-cli setup install` writes DB_DIR/bluemind.installed, so a node that
has the storage mounted sees BlueMind installed and a node that has not sees it
NOT_INSTALLED.

Environment (the unit reads /etc/default/bm-core):
    BM_CORE_BIND            address to listen on (0.0.0.0)
    BM_CORE_PORT            port (8090)
    BM_CORE_STARTUP_DELAY   seconds spent in CORE_STATE_STARTING (3)
    BM_STANDIN_DB_DIR       the database directory (/var/lib/postgresql)
    BM_STANDIN_SPOOL_DIR    where mail bodies go (/var/spool/cyrus/data)
    BM_CORE_VERSION_FILE    the package version (/usr/share/bm-core/version), read at start
SIGTERM stops it cleanly (exit 0).
"""
from __future__ import annotations

import http.server
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.parse

DB_NAME = "bluemind.db"
INSTALLED_NAME = "bluemind.installed"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_BODY = 16 << 20


class Settings:
    def __init__(self, env):
        self.bind = env.get("BM_CORE_BIND", "0.0.0.0")
        self.port = int(env.get("BM_CORE_PORT", "8090"))
        self.delay = float(env.get("BM_CORE_STARTUP_DELAY", "3"))
        self.db_dir = env.get("BM_STANDIN_DB_DIR", "/var/lib/postgresql")
        self.spool = env.get("BM_STANDIN_SPOOL_DIR", "/var/spool/cyrus/data")
        self.started = time.monotonic()
        # Read once, like the real core reports the version it was started from:
        # after an upgrade of the package, the new version shows after a restart.
        try:
            with open(env.get("BM_CORE_VERSION_FILE", "/usr/share/bm-core/version"), encoding="utf-8") as handle:
                self.version = handle.read().strip()
        except OSError:
            self.version = "unknown"

    def state(self) -> str:
        if time.monotonic() - self.started < self.delay:
            return "CORE_STATE_STARTING"
        if not os.path.exists(os.path.join(self.db_dir, INSTALLED_NAME)):
            return "CORE_STATE_NOT_INSTALLED"
        return "CORE_STATE_RUNNING"


def write_durably(path: str, data: bytes) -> None:
    """Write PATH through a temporary file, fsync it, rename it, fsync the directory."""
    directory = os.path.dirname(path)
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def append_durably(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, line.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def make_handler(settings: Settings, db_lock: threading.Lock):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "bm-core-standin"
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # pylint: disable=redefined-builtin
            sys.stderr.write("bm-core: %s %s\n" % (self.address_string(), format % args))

        def reply(self, code: int, body, content_type: str = "application/json") -> None:
            if isinstance(body, bytes):
                data = body
            else:
                data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def mail_name(self):
            name = self.path.split("?", 1)[0][len("/api/test/mail/"):]
            return name if NAME_RE.match(name) else None

        def do_GET(self):  # pylint: disable=invalid-name
            path = self.path.split("?", 1)[0]
            if path == "/api/system/installation/state":
                self.reply(200, settings.state())
            elif path == "/api/system/installation/_infos":
                version = settings.version
                self.reply(200, {"softwareVersion": version, "releaseName": f"BlueMind {version} (lab stand-in)"})
            elif path == "/api/auth/ping":
                self.reply(200, "pong")
            elif path == "/api/test/mail" and "prefix=" in self.path:
                prefix = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("prefix", [""])[0]
                if not NAME_RE.match(prefix):
                    self.reply(400, {"error": "bad prefix"})
                    return
                self.reply(200, self.stored(prefix))
            elif path == "/api/test/mail":
                self.reply(200, self.recorded())
            elif path.startswith("/api/test/mail/"):
                name = self.mail_name()
                if name is None:
                    self.reply(400, {"error": "bad name"})
                    return
                try:
                    with open(os.path.join(settings.spool, name), "rb") as handle:
                        data = handle.read()
                except FileNotFoundError:
                    self.reply(404, {"error": "no such mail"})
                    return
                self.reply(200, data, "application/octet-stream")
            else:
                self.reply(404, {"error": "not found"})

        do_HEAD = do_GET

        def do_PUT(self):  # pylint: disable=invalid-name
            if not self.path.startswith("/api/test/mail/"):
                self.reply(404, {"error": "not found"})
                return
            name = self.mail_name()
            length = int(self.headers.get("Content-Length") or 0)
            if name is None or length > MAX_BODY:
                self.reply(400, {"error": "bad name or size"})
                return
            data = self.rfile.read(length)
            state = settings.state()
            if state != "CORE_STATE_RUNNING":
                self.reply(503, {"error": state})
                return
            try:
                write_durably(os.path.join(settings.spool, name), data)
                with db_lock:
                    append_durably(os.path.join(settings.db_dir, DB_NAME),
                                   json.dumps({"mail": name, "size": len(data), "time": time.time()}))
            except OSError as exc:
                self.reply(500, {"error": str(exc)})
                return
            self.reply(201, {"stored": name, "size": len(data)})

        def stored(self, prefix: str) -> dict:
            bodies = {}
            for name in os.listdir(settings.spool):
                if name.startswith(prefix) and NAME_RE.match(name):
                    try:
                        with open(os.path.join(settings.spool, name), "rb") as handle:
                            bodies[name] = handle.read().decode("utf-8", "replace")
                    except FileNotFoundError:
                        pass
            return bodies

        def recorded(self) -> list:
            try:
                with open(os.path.join(settings.db_dir, DB_NAME), encoding="utf-8") as handle:
                    return [json.loads(line)["mail"] for line in handle if line.strip()]
            except FileNotFoundError:
                return []

    return Handler


def main() -> int:
    settings = Settings(os.environ)
    server = http.server.ThreadingHTTPServer((settings.bind, settings.port), make_handler(settings, threading.Lock()))
    server.daemon_threads = True

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"bm-core stand-in {settings.version} listening on {settings.bind}:{settings.port}\n")
    sys.stderr.flush()
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
