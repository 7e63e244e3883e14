#!/usr/bin/env python
# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""TEST DOUBLE: build a stand-in for BlueMind's apt repository, for the lab only.

BlueMind's packages need a subscription and cannot be downloaded by the lab. This
builds, from the sources in packages/, a signed apt repository that behaves like the
vendor's where the roles depend on it (package names, version pinning, units and
their targets, the setup CLI, bm-conf's start of bluemind.target on every install or
upgrade), plus the subscription archive that points at it. Nothing here is BlueMind,
nothing built is committed, and no role default points at it.

    build.py --out DIR --url http://10.0.2.2:PORT [--versions 5.1.100,5.1.101]

DIR then holds:
    bluemind-standin.asc        the repository's public key (a throwaway key, DIR/gnupg)
    pool/main/b/PKG/*.deb       Architecture: all packages, every version
    dists/bookworm/             Release, InRelease, Release.gpg, main/binary-{amd64,all}/Packages(.gz)
    subscription.bmz            the subscription archive: one entry per distribution,
                                named as the vendor's ArchiveHelper looks them up
                                (the server's codename: bookworm, ...; rhel8)
Serve DIR over HTTP (tests/lab/labctl.py serve-repo) at URL.
"""
from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "packages"
CODENAME = "bookworm"
COMPONENT = "main"
INDEX_ARCHES = ("amd64", "all")
DEFAULT_VERSIONS = ["5.1.100", "5.1.101"]
KEY_FILE = "bluemind-standin.asc"
SUBSCRIPTION = "subscription.bmz"
MAINTAINER = "bluemind_ha.cluster lab <lab@lab.test>"
# Every file of every package is dated 2024-01-01 00:00 UTC (reproducible builds).
SOURCE_DATE_EPOCH = 1704067200
# Distributions of the subscription archive: entry name (the vendor's
# Distribution.getName(), the server's codename) -> kind of repository file.
SUBSCRIPTION_ENTRIES = {"bookworm": "apt", "bullseye": "apt", "buster": "apt", "jammy": "apt", "focal": "apt",
                        "rhel8": "yum"}
# name: what it stands in for, its dependencies ({v}: the same version) and the empty
# directories it owns. The files come from packages/NAME/ (DEBIAN/ holds the
# maintainer scripts and triggers; the control file is generated).
PACKAGES = {
    "bm-full": {
        "summary": "BlueMind, all components (metapackage)",
        "depends": ["bm-conf (= {v})", "bm-core (= {v})", "bm-nginx (= {v})", "bm-postgresql (= {v})"],
    },
    "bm-conf": {
        "summary": "BlueMind configuration: bluemind.target, bmctl",
        "depends": [],
        "dirs": ["etc/bm"],
    },
    "bm-core": {
        "summary": "BlueMind core server",
        "depends": ["bm-conf (= {v})", "python3"],
        "dirs": ["var/spool/cyrus/data", "var/spool/bm-docs"],
    },
    "bm-nginx": {
        "summary": "BlueMind HTTPS front end",
        "depends": ["python3", "openssl"],
    },
    "bm-postgresql": {
        "summary": "PostgreSQL for BlueMind",
        "depends": ["python3"],
        "dirs": ["var/lib/postgresql"],
    },
    "bm-plugin-cli-setup": {
        "summary": "BlueMind command line: setup install and upgrade",
        "depends": ["python3"],
    },
    "bm-checks": {
        "summary": "BlueMind health checks",
        "depends": ["python3"],
    },
}
MAINTAINER_SCRIPTS = {"preinst", "postinst", "prerm", "postrm", "config"}


class BuildError(Exception):
    pass


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, check=False, **kwargs)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr
        raise BuildError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()}")
    return proc


def file_mode(rel: Path) -> int:
    if rel.parts[0] == "DEBIAN":
        return 0o755 if rel.name in MAINTAINER_SCRIPTS else 0o644
    if rel.parts[:2] == ("usr", "bin") or rel.suffix == ".sh":
        return 0o755
    return 0o644


def control_text(name: str, version: str, installed_kib: int) -> str:
    spec = PACKAGES[name]
    fields = [("Package", name), ("Version", version), ("Architecture", "all"), ("Maintainer", MAINTAINER),
              ("Installed-Size", str(installed_kib))]
    depends = [d.format(v=version) for d in spec["depends"]]
    if depends:
        fields.append(("Depends", ", ".join(depends)))
    fields += [("Section", "net"), ("Priority", "optional"),
               ("Description", f"{spec['summary']} (lab TEST DOUBLE)\n"
                               f" Stand-in for BlueMind's {name} package, built by tests/lab/bm_standin/build.py\n"
                               " for the bluemind_ha.cluster lab. This is not BlueMind.")]
    return "".join(f"{key}: {value}\n" for key, value in fields)


def build_tree(name: str, version: str, root: Path) -> None:
    """The package's file tree, with its control file, under ROOT."""
    source = SOURCES / name
    root.mkdir(parents=True)
    (root / "DEBIAN").mkdir()
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            if path.is_dir() or "__pycache__" in rel.parts or path.suffix == ".pyc":
                continue
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            target.chmod(file_mode(rel))
    for directory in PACKAGES[name].get("dirs", []):
        (root / directory).mkdir(parents=True, exist_ok=True)
    if name == "bm-core":
        (root / "usr/share/bm-core").mkdir(parents=True, exist_ok=True)
        (root / "usr/share/bm-core/version").write_text(version + "\n")
    for directory in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        directory.chmod(0o755)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and "DEBIAN" not in p.relative_to(root).parts)
    (root / "DEBIAN" / "control").write_text(control_text(name, version, max(1, (size + 1023) // 1024)))
    # Reproducible: the same sources give the same .deb (file times fixed here, the
    # ar members' times by SOURCE_DATE_EPOCH), so a rebuild of the repository (a
    # reinstalled node's prepare) leaves the index other guests read valid.
    for path in [root, *root.rglob("*")]:
        os.utime(path, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH), follow_symlinks=False)


def hashes(data: bytes) -> dict:
    return {"MD5sum": hashlib.md5(data).hexdigest(), "SHA1": hashlib.sha1(data).hexdigest(),
            "SHA256": hashlib.sha256(data).hexdigest()}


def packages_stanza(control: str, filename: str, data: bytes) -> str:
    """The control fields of a .deb with its place and checksums, as in a Packages index."""
    head, _sep, description = control.partition("Description:")
    sums = hashes(data)
    extra = (f"Filename: {filename}\nSize: {len(data)}\nMD5sum: {sums['MD5sum']}\nSHA1: {sums['SHA1']}\n"
             f"SHA256: {sums['SHA256']}\n")
    return head + extra + "Description:" + description


def gpg(home: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(["gpg", "--homedir", str(home), "--batch", "--yes", "--no-tty", *args], **kwargs)


def ensure_key(out: Path) -> tuple[Path, str]:
    """A throwaway signing key in OUT/gnupg (kept across rebuilds of the same
    directory, so that guests keep trusting it), exported to OUT/bluemind-standin.asc."""
    home = out / "gnupg"
    home.mkdir(mode=0o700, exist_ok=True)
    home.chmod(0o700)
    listing = gpg(home, "--with-colons", "--list-secret-keys", text=True).stdout
    if "\nsec:" not in "\n" + listing:
        params = ("%no-protection\nKey-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\n"
                  "Name-Real: BlueMind stand-in repository (lab TEST DOUBLE)\nName-Email: bm-standin@lab.test\n"
                  "Expire-Date: 0\n%commit\n")
        gpg(home, "--gen-key", input=params, text=True)
        listing = gpg(home, "--with-colons", "--list-secret-keys", text=True).stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    key = out / KEY_FILE
    exported = gpg(home, "--armor", "--comment", "TEST DOUBLE: signing key of the BlueMind stand-in repository (lab only)",
                   "--export", fingerprint).stdout
    key.write_bytes(exported)
    return key, fingerprint


def write_indexes(out: Path, stanzas: list[str]) -> list[str]:
    """Packages and Packages.gz for every index architecture; their paths under dists/CODENAME."""
    dist = out / "dists" / CODENAME
    text = "\n".join(stanzas).encode()
    written = []
    for arch in INDEX_ARCHES:
        directory = dist / COMPONENT / f"binary-{arch}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "Packages").write_bytes(text)
        (directory / "Packages.gz").write_bytes(gzip.compress(text, mtime=0))
        written += [f"{COMPONENT}/binary-{arch}/Packages", f"{COMPONENT}/binary-{arch}/Packages.gz"]
    return written


def write_release(out: Path, files: list[str], home: Path, fingerprint: str) -> Path:
    dist = out / "dists" / CODENAME
    lines = ["Origin: BlueMind stand-in (lab TEST DOUBLE)", "Label: bm-standin", f"Suite: {CODENAME}",
             f"Codename: {CODENAME}", f"Date: {email.utils.formatdate(usegmt=True)}",
             f"Architectures: {' '.join(INDEX_ARCHES)}", f"Components: {COMPONENT}",
             "Description: TEST DOUBLE of BlueMind's apt repository, built by tests/lab/bm_standin/build.py"]
    contents = {rel: (dist / rel).read_bytes() for rel in files}
    for field, algo in (("MD5Sum", hashlib.md5), ("SHA256", hashlib.sha256)):
        lines.append(f"{field}:")
        lines += [f" {algo(data).hexdigest()} {len(data):>8} {rel}" for rel, data in contents.items()]
    release = dist / "Release"
    release.write_text("\n".join(lines) + "\n")
    for name in ("InRelease", "Release.gpg"):
        (dist / name).unlink(missing_ok=True)
    gpg(home, "--local-user", fingerprint, "--digest-algo", "SHA512", "--clearsign",
        "--output", str(dist / "InRelease"), str(release))
    gpg(home, "--local-user", fingerprint, "--digest-algo", "SHA512", "--armor", "--detach-sign",
        "--output", str(dist / "Release.gpg"), str(release))
    return release


def write_subscription(out: Path, url: str) -> Path:
    """The subscription archive: a zip of repository files, one per distribution,
    each entry named after the server's codename (BlueMind's ArchiveHelper picks the
    entry whose name is Distribution.getName() and installs it as
    /etc/apt/sources.list.d/bm.list, or /etc/yum.repos.d/bm.repo on RHEL)."""
    path = out / SUBSCRIPTION
    header = "# TEST DOUBLE: BlueMind stand-in repository (lab only), from tests/lab/bm_standin/build.py\n"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.comment = b"TEST DOUBLE: subscription archive of the BlueMind stand-in repository (lab only)"
        for entry, kind in SUBSCRIPTION_ENTRIES.items():
            if kind == "apt":
                text = f"{header}deb {url} {entry} {COMPONENT}\n"
            else:
                text = (f"{header}[bluemind]\nname=BlueMind (lab stand-in)\nbaseurl={url}/{entry}\n"
                        "enabled=1\ngpgcheck=0\n")
            archive.writestr(zipfile.ZipInfo(entry, date_time=(2024, 1, 1, 0, 0, 0)), text)
    return path


def build(out: Path, url: str, versions: list[str]) -> dict:
    """Build the stand-in repository into OUT for clients reaching it at URL; a
    description of what was built."""
    out = Path(out).resolve()
    url = url.rstrip("/")
    versions = [v.strip() for v in versions if v.strip()]
    if not versions:
        raise BuildError("no version to build")
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("pool", "dists"):
        shutil.rmtree(out / stale, ignore_errors=True)
    home = out / "gnupg"
    try:
        key, fingerprint = ensure_key(out)
        stanzas, debs = [], []
        with tempfile.TemporaryDirectory(prefix="bm-standin-") as tmp:
            for version in versions:
                for name in PACKAGES:
                    root = Path(tmp) / f"{name}_{version}"
                    build_tree(name, version, root)
                    rel = f"pool/{COMPONENT}/b/{name}/{name}_{version}_all.deb"
                    deb = out / rel
                    deb.parent.mkdir(parents=True, exist_ok=True)
                    run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
                        env=dict(os.environ, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH)))
                    stanzas.append(packages_stanza((root / "DEBIAN" / "control").read_text(), rel, deb.read_bytes()))
                    debs.append(str(deb))
        release = write_release(out, write_indexes(out, stanzas), home, fingerprint)
        subscription = write_subscription(out, url)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True, check=False)
    return {
        "directory": str(out), "url": url, "codename": CODENAME, "component": COMPONENT,
        "key": str(key), "fingerprint": fingerprint, "release": str(release),
        "packages": {name: list(versions) for name in PACKAGES}, "debs": debs,
        "subscription": str(subscription), "subscription_entries": list(SUBSCRIPTION_ENTRIES),
        "apt_line": f"deb {url} {CODENAME} {COMPONENT}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="directory to build into")
    parser.add_argument("--url", required=True, help="where clients reach the directory, e.g. http://10.0.2.2:20192")
    parser.add_argument("--versions", default=",".join(DEFAULT_VERSIONS), help="comma-separated package versions")
    args = parser.parse_args(argv)
    try:
        result = build(args.out, args.url, args.versions.split(","))
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
