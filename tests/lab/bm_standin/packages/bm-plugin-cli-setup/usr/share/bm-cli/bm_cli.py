# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""TEST DOUBLE of BlueMind's bm-cli setup commands, for the lab only.

    bm-cli setup install --external-url FQDN --domain DOMAIN --admin0-pass PASSWORD
                         --sw-pass PASSWORD [--host IP]
        Records the installation in the database directory (DB_DIR/bluemind.installed,
        JSON, with the SHA-256 of each password; the stand-in bm-core then answers
        CORE_STATE_RUNNING) and writes ETC_DIR/bm.ini (external-url, host). Exit 1
        when BlueMind is already installed, 2 when the database directory does not
        exist (storage not there).
        Two passwords, as the vendor's command has them (bluemind-doc's CLI page and
        the 4.4 release notes, ../shared/bluemind-notes.md "Setup CLI"):
        --admin0-pass is admin0's, --sw-pass the Setup Wizard's. The sources do not
        say whether --admin0-pass may be left out; the stand-in takes the stricter
        reading and requires it (argparse exits 2 without it).
    bm-cli setup upgrade
        Records the version of bm-core it upgraded to in DB_DIR/bluemind.schema-version
        (and appends it to DB_DIR/bluemind.upgrades). Exit 0; 1 when not installed.

Both also write DB_DIR/bluemind.schema-version, the data's version. Environment:
BM_STANDIN_DB_DIR (/var/lib/postgresql), BM_STANDIN_ETC_DIR (/etc/bm),
BM_CORE_VERSION_FILE (/usr/share/bm-core/version).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import time

INSTALLED_NAME = "bluemind.installed"
SCHEMA_NAME = "bluemind.schema-version"
UPGRADES_NAME = "bluemind.upgrades"


def write_durably(path: str, text: str, mode: int = 0o644) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def core_version() -> str:
    try:
        with open(os.environ.get("BM_CORE_VERSION_FILE", "/usr/share/bm-core/version"), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return "unknown"


def resolve(name: str) -> str:
    try:
        return socket.gethostbyname(name)
    except OSError:
        return "127.0.0.1"


def setup_install(args, db_dir: str, etc_dir: str) -> int:
    marker = os.path.join(db_dir, INSTALLED_NAME)
    if not os.path.isdir(db_dir):
        print(f"bm-cli: the database directory {db_dir} does not exist", file=sys.stderr)
        return 2
    if os.path.exists(marker):
        print("bm-cli: BlueMind is already installed", file=sys.stderr)
        return 1
    version = core_version()
    host = args.host or resolve(args.external_url)
    os.makedirs(etc_dir, exist_ok=True)
    write_durably(os.path.join(etc_dir, "bm.ini"),
                  f"[global]\nexternal-url = {args.external_url}\nhost = {host}\n")
    write_durably(os.path.join(db_dir, SCHEMA_NAME), version + "\n")
    write_durably(marker, json.dumps({
        "external_url": args.external_url, "domain": args.domain, "host": host, "version": version,
        "admin0_pass_sha256": hashlib.sha256(args.admin0_pass.encode()).hexdigest(),
        "sw_pass_sha256": hashlib.sha256(args.sw_pass.encode()).hexdigest(), "time": time.time(),
    }) + "\n", 0o600)
    print(f"BlueMind {version} installed: https://{args.external_url}/, domain {args.domain}")
    return 0


def setup_upgrade(db_dir: str) -> int:
    if not os.path.exists(os.path.join(db_dir, INSTALLED_NAME)):
        print("bm-cli: BlueMind is not installed", file=sys.stderr)
        return 1
    version = core_version()
    write_durably(os.path.join(db_dir, SCHEMA_NAME), version + "\n")
    fd = os.open(os.path.join(db_dir, UPGRADES_NAME), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {version}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    print(f"BlueMind upgraded to {version}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bm-cli", description="BlueMind CLI (lab stand-in): setup only")
    sub = parser.add_subparsers(dest="group", required=True)
    setup = sub.add_parser("setup").add_subparsers(dest="command", required=True)
    install = setup.add_parser("install", help="set up a new BlueMind")
    install.add_argument("--external-url", required=True)
    install.add_argument("--domain", required=True)
    install.add_argument("--admin0-pass", required=True, help="admin0's password")
    install.add_argument("--sw-pass", required=True, help="the Setup Wizard's password")
    install.add_argument("--host", help="address written to bm.ini (default: the external URL's)")
    setup.add_parser("upgrade", help="upgrade the data to the installed version")
    args = parser.parse_args(argv)
    db_dir = os.environ.get("BM_STANDIN_DB_DIR", "/var/lib/postgresql")
    etc_dir = os.environ.get("BM_STANDIN_ETC_DIR", "/etc/bm")
    if args.command == "install":
        return setup_install(args, db_dir, etc_dir)
    return setup_upgrade(db_dir)


if __name__ == "__main__":
    sys.exit(main())
