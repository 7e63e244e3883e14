# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the BlueMind stand-in repository (a test double of the vendor's apt
repository, tests/lab/bm_standin): what it builds, the packages' maintainer scripts
and units, and its programs run directly on this machine."""
import gzip
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
STANDIN = ROOT / "tests" / "lab" / "bm_standin"
SOURCES = STANDIN / "packages"
CORE_SERVER = SOURCES / "bm-core/usr/share/bm-core/bm_core_server.py"
CLI = SOURCES / "bm-plugin-cli-setup/usr/share/bm-cli/bm_cli.py"
PROXY = SOURCES / "bm-nginx/usr/share/bm-nginx/bm_nginx_proxy.py"
POSTGRES = SOURCES / "bm-postgresql/usr/share/bm-postgresql/postgres_standin.py"
CHECK_CORE = SOURCES / "bm-checks/usr/share/bm-checks/check_core.sh"
VERSIONS = ["5.1.100", "5.1.101"]
URL = "http://10.0.2.2:20192"
PACKAGE_NAMES = {"bm-full", "bm-conf", "bm-core", "bm-nginx", "bm-postgresql", "bm-plugin-cli-setup", "bm-checks"}

needs_tools = pytest.mark.skipif(not all(shutil.which(t) for t in ("gpg", "gpgv", "dpkg-deb")),
                                 reason="needs gpg, gpgv and dpkg-deb")


def load_builder():
    spec = importlib.util.spec_from_file_location("bm_standin_build_under_test", STANDIN / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    out = tmp_path_factory.mktemp("standin") / "repo"
    result = load_builder().build(out, URL + "/", VERSIONS)
    return out, result


def stanzas(text: str) -> list[dict]:
    entries = []
    for block in text.strip().split("\n\n"):
        fields, key = {}, None
        for line in block.splitlines():
            if line.startswith(" ") and key:
                fields[key] += "\n" + line
            else:
                key, _sep, value = line.partition(":")
                fields[key] = value.strip()
        entries.append(fields)
    return entries


def packages_index(out: Path, arch: str = "amd64") -> list[dict]:
    return stanzas((out / f"dists/bookworm/main/binary-{arch}/Packages").read_text())


def extract(out: Path, name: str, version: str, dest: Path) -> Path:
    target = dest / f"{name}_{version}"
    if not target.exists():
        subprocess.run(["dpkg-deb", "-R", str(out / f"pool/main/b/{name}/{name}_{version}_all.deb"), str(target)],
                       check=True)
    return target


def unit_section(text: str, section: str) -> dict:
    values, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, _sep, value = line.partition("=")
            values.setdefault(key, []).extend(value.split())
    return values


# ------------------------------------------------------------ the repository


@needs_tools
def test_every_version_of_every_package_is_indexed(repo):
    out, result = repo
    for arch in ("amd64", "all"):
        index = packages_index(out, arch)
        assert {(e["Package"], e["Version"]) for e in index} == {(p, v) for p in PACKAGE_NAMES for v in VERSIONS}
    for entry in packages_index(out):
        assert entry["Architecture"] == "all"
        data = (out / entry["Filename"]).read_bytes()
        assert entry["SHA256"] == hashlib.sha256(data).hexdigest()
        assert int(entry["Size"]) == len(data)
        assert "TEST DOUBLE" in entry["Description"]
    assert set(result["packages"]) == PACKAGE_NAMES
    assert result["url"] == URL


@needs_tools
def test_release_is_signed_inline_and_detached(repo, tmp_path):
    out, _result = repo
    keyring = tmp_path / "standin.gpg"
    subprocess.run(["gpg", "--batch", "--homedir", str(tmp_path), "--dearmor", "--output", str(keyring),
                    str(out / "bluemind-standin.asc")], check=True, capture_output=True)
    dist = out / "dists" / "bookworm"

    def gpgv(*files):
        return subprocess.run(["gpgv", "--homedir", str(tmp_path), "--keyring", str(keyring), *map(str, files)],
                              capture_output=True, check=False).returncode

    assert gpgv(dist / "InRelease") == 0
    assert gpgv(dist / "Release.gpg", dist / "Release") == 0
    forged = tmp_path / "Release"
    forged.write_text((dist / "Release").read_text().replace("Suite: bookworm", "Suite: trixie"))
    assert gpgv(dist / "Release.gpg", forged) != 0
    assert "bookworm" in (dist / "InRelease").read_text()


@needs_tools
def test_release_fields_and_checksums(repo):
    out, _result = repo
    dist = out / "dists" / "bookworm"
    text = (dist / "Release").read_text()
    fields = stanzas(text)[0]
    assert fields["Codename"] == "bookworm" and fields["Suite"] == "bookworm"
    assert fields["Components"] == "main"
    assert fields["Architectures"].split() == ["amd64", "all"]
    assert re.match(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$", fields["Date"])
    assert "MD5Sum" in fields
    listed = {}
    for line in fields["SHA256"].splitlines():
        if line.strip():
            digest, size, rel = line.split()
            listed[rel] = (digest, int(size))
    assert {"main/binary-amd64/Packages", "main/binary-amd64/Packages.gz"} <= set(listed)
    for rel, (digest, size) in listed.items():
        data = (dist / rel).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (digest, size), rel
    plain = (dist / "main/binary-amd64/Packages").read_bytes()
    assert gzip.decompress((dist / "main/binary-amd64/Packages.gz").read_bytes()) == plain


@needs_tools
def test_bm_full_pins_its_components_to_its_own_version(repo):
    out, _result = repo
    for entry in packages_index(out):
        if entry["Package"] != "bm-full":
            continue
        depends = dict(re.match(r"(\S+) \(= (\S+)\)$", d.strip()).groups() for d in entry["Depends"].split(","))
        assert depends == {p: entry["Version"] for p in ("bm-conf", "bm-core", "bm-nginx", "bm-postgresql")}


@needs_tools
def test_subscription_archive_has_one_entry_per_codename(repo):
    out, result = repo
    with zipfile.ZipFile(out / "subscription.bmz") as archive:
        names = set(archive.namelist())
        assert {"bookworm", "bullseye", "jammy", "focal", "rhel8"} <= names
        lines = [line for line in archive.read("bookworm").decode().splitlines() if line and not line.startswith("#")]
        assert lines == [f"deb {URL} bookworm main"]
        assert f"baseurl={URL}/" in archive.read("rhel8").decode()
        assert b"TEST DOUBLE" in archive.comment
    assert result["apt_line"] == f"deb {URL} bookworm main"


def test_rebuild_keeps_the_signing_key(repo, tmp_path):
    out, result = repo
    again = load_builder().build(tmp_path / "again", URL, ["5.1.100"])
    assert again["fingerprint"] != result["fingerprint"]
    shutil.copytree(out / "gnupg", tmp_path / "same" / "gnupg", ignore=shutil.ignore_patterns("S.*"))
    same = load_builder().build(tmp_path / "same", URL, ["5.1.102"])
    assert same["fingerprint"] == result["fingerprint"]
    assert {e["Version"] for e in packages_index(tmp_path / "same")} == {"5.1.102"}


def test_rebuild_gives_the_same_packages(repo, tmp_path):
    """A second build (a reinstalled node's prepare) must not change a .deb: guests
    that read the index before would fetch files whose checksums no longer match."""
    out, _result = repo
    shutil.copytree(out, tmp_path / "copy", ignore=shutil.ignore_patterns("S.*"))
    load_builder().build(tmp_path / "copy", URL + "/", VERSIONS)
    first = {p.relative_to(out): p.read_bytes() for p in (out / "pool").rglob("*.deb")}
    second = {p.relative_to(tmp_path / "copy"): p.read_bytes() for p in (tmp_path / "copy" / "pool").rglob("*.deb")}
    assert first and first == second
    assert packages_index(out) == packages_index(tmp_path / "copy")


# ------------------------------------------------- maintainer scripts and units


def run_script(script: Path, args: list[str], tmp_path: Path, systemd_running: bool = True) -> list[str]:
    """Run a maintainer script with systemctl and dpkg-trigger replaced by stubs that
    log their arguments, and /run/systemd/system by a directory of the test's."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    log.write_text("")
    for tool in ("systemctl", "dpkg-trigger"):
        (stubs / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\n')
        (stubs / tool).chmod(0o755)
    running = tmp_path / "run-systemd-system"
    if systemd_running:
        running.mkdir(exist_ok=True)
    elif running.exists():
        running.rmdir()
    copy = tmp_path / script.name
    copy.write_text(script.read_text().replace("/run/systemd/system", str(running)))
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}")
    subprocess.run(["sh", str(copy), *args], check=True, env=env, capture_output=True)
    return log.read_text().splitlines()


@needs_tools
@pytest.mark.parametrize("args", [["configure", ""], ["configure", "5.1.100"], ["triggered", "bluemindtarget"]])
def test_bm_conf_starts_bluemind_on_configure_and_trigger(repo, tmp_path, args):
    out, _result = repo
    postinst = extract(out, "bm-conf", "5.1.101", tmp_path) / "DEBIAN" / "postinst"
    calls = run_script(postinst, args, tmp_path)
    assert "systemctl start bluemind.target" in calls
    assert calls.index("systemctl daemon-reload") < calls.index("systemctl start bluemind.target")
    # Without a running systemd (a chroot), nothing is started, as with any package.
    assert "systemctl start bluemind.target" not in run_script(postinst, args, tmp_path, systemd_running=False)


@needs_tools
def test_bm_core_activates_the_trigger_bm_conf_is_interested_in(repo, tmp_path):
    out, _result = repo
    conf = extract(out, "bm-conf", "5.1.101", tmp_path)
    directives = [line.split("#", 1)[0].split() for line in (conf / "DEBIAN" / "triggers").read_text().splitlines()]
    interests = {d[1] for d in directives if d and d[0] in ("interest", "interest-noawait")}
    assert interests == {"bluemindtarget"}
    core = extract(out, "bm-core", "5.1.101", tmp_path)
    for args in (["configure", ""], ["configure", "5.1.100"]):
        activated = [c.split()[-1] for c in run_script(core / "DEBIAN" / "postinst", args, tmp_path)
                     if c.startswith("dpkg-trigger")]
        assert activated and set(activated) <= interests
    # Enabled on first installation only: an administrator's disable survives upgrades.
    assert "systemctl enable bm-core.service" in run_script(core / "DEBIAN" / "postinst", ["configure", ""], tmp_path)
    assert not any("enable" in c for c in run_script(core / "DEBIAN" / "postinst", ["configure", "5.1.100"], tmp_path))


@needs_tools
def test_units_and_their_target(repo, tmp_path):
    out, _result = repo
    core = extract(out, "bm-core", "5.1.100", tmp_path) / "lib/systemd/system/bm-core.service"
    unit = core.read_text()
    assert "bluemind.target" in unit_section(unit, "Unit")["PartOf"]
    assert "postgresql.service" in unit_section(unit, "Unit")["After"]
    assert unit_section(unit, "Install")["WantedBy"] == ["bluemind.target"]
    outside = {"bm-nginx": "bm-nginx.service", "bm-postgresql": "postgresql.service"}
    for package, name in outside.items():
        text = (extract(out, package, "5.1.100", tmp_path) / "lib/systemd/system" / name).read_text()
        assert "bluemind.target" not in " ".join(sum(unit_section(text, "Unit").values(), []))
        assert unit_section(text, "Install")["WantedBy"] == ["multi-user.target"]
    target = extract(out, "bm-conf", "5.1.100", tmp_path) / "lib/systemd/system/bluemind.target"
    assert unit_section(target.read_text(), "Install")["WantedBy"] == ["multi-user.target"]
    bmctl = extract(out, "bm-conf", "5.1.100", tmp_path) / "usr/bin/bmctl"
    assert os.access(bmctl, os.X_OK)
    version = extract(out, "bm-core", "5.1.101", tmp_path) / "usr/share/bm-core/version"
    assert version.read_text().strip() == "5.1.101"


def test_every_source_is_labelled_a_test_double():
    for path in [STANDIN / "build.py", *SOURCES.rglob("*")]:
        if path.is_file() and "__pycache__" not in path.parts:
            assert "TEST DOUBLE" in path.read_text(), path


def test_no_role_default_points_at_the_stand_in():
    for defaults in (ROOT / "roles").glob("*/defaults/*.yml"):
        text = defaults.read_text()
        assert "10.0.2.2" not in text and "standin" not in text.replace("-", "").lower(), defaults


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="needs shellcheck")
def test_shell_scripts_pass_shellcheck():
    scripts = [p for p in SOURCES.rglob("*") if p.is_file() and p.read_text().startswith("#!/bin/sh")]
    assert len(scripts) >= 8
    proc = subprocess.run(["shellcheck", "-s", "sh", *map(str, scripts)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout


# ------------------------------------------------------------- the programs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, context=None):
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def put(url: str, data: bytes):
    request = urllib.request.Request(url, data=data, method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture()
def core(tmp_path):
    """bm-core's program on a free port, its directories under tmp_path."""
    env = dict(os.environ, BM_CORE_BIND="127.0.0.1", BM_CORE_PORT=str(free_port()), BM_CORE_STARTUP_DELAY="2",
               BM_STANDIN_DB_DIR=str(tmp_path / "postgresql"), BM_STANDIN_SPOOL_DIR=str(tmp_path / "spool"),
               BM_STANDIN_ETC_DIR=str(tmp_path / "etc-bm"), BM_CORE_VERSION_FILE=str(tmp_path / "version"))
    for directory in ("postgresql", "spool"):
        (tmp_path / directory).mkdir()
    (tmp_path / "version").write_text("5.1.101\n")
    proc = subprocess.Popen([sys.executable, str(CORE_SERVER)], env=env, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{env['BM_CORE_PORT']}"
    try:
        yield proc, base, env
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()


def state(base: str) -> str:
    status, body = get(base + "/api/system/installation/state")
    assert status == 200
    return json.loads(body)


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLI), *args], env=env, capture_output=True, text=True, check=False)


def check_core(url: str) -> int:
    env = dict(os.environ, BM_CHECK_CORE_URL=url)
    return subprocess.run(["sh", str(CHECK_CORE)], env=env, capture_output=True, check=False).returncode


def test_bm_core_states_setup_and_data(core, tmp_path):
    proc, base, env = core
    assert wait_for(lambda: state(base)) == "CORE_STATE_STARTING"
    assert get(base + "/api/auth/ping")[0] == 200
    infos = json.loads(get(base + "/api/system/installation/_infos")[1])
    assert infos["softwareVersion"] == "5.1.101" and infos["releaseName"]
    assert check_core(base + "/api/system/installation/state") == 2
    assert wait_for(lambda: state(base) == "CORE_STATE_NOT_INSTALLED")
    assert put(base + "/api/test/mail/m1", b"early")[0] == 503

    # Without admin0's password the vendor's option is missing: refused, nothing installed.
    refused = cli(env, "setup", "install", "--external-url", "mail.lab.test", "--domain", "lab.test",
                  "--sw-pass", "secret", "--host", "192.168.60.100")
    assert refused.returncode == 2 and "--admin0-pass" in refused.stderr, refused.stderr
    assert state(base) == "CORE_STATE_NOT_INSTALLED"
    done = cli(env, "setup", "install", "--external-url", "mail.lab.test", "--domain", "lab.test",
               "--admin0-pass", "admin0-secret", "--sw-pass", "secret", "--host", "192.168.60.100")
    assert done.returncode == 0, done.stderr
    assert state(base) == "CORE_STATE_RUNNING"
    assert check_core(base + "/api/system/installation/state") == 0
    ini = (tmp_path / "etc-bm" / "bm.ini").read_text()
    assert "external-url = mail.lab.test" in ini and "host = 192.168.60.100" in ini
    record = json.loads((tmp_path / "postgresql" / "bluemind.installed").read_text())
    assert "secret" not in json.dumps(record)
    # Each password reached its own option.
    assert record["admin0_pass_sha256"] == hashlib.sha256(b"admin0-secret").hexdigest()
    assert record["sw_pass_sha256"] == hashlib.sha256(b"secret").hexdigest()
    assert cli(env, "setup", "install", "--external-url", "x", "--domain", "y", "--admin0-pass", "a",
               "--sw-pass", "z").returncode == 1

    body = os.urandom(4096)
    assert put(base + "/api/test/mail/m1", body)[0] == 201
    assert get(base + "/api/test/mail/m1") == (200, body)
    assert (tmp_path / "spool" / "m1").read_bytes() == body
    assert json.loads(get(base + "/api/test/mail")[1]) == ["m1"]
    assert json.loads((tmp_path / "postgresql" / "bluemind.db").read_text().splitlines()[0])["mail"] == "m1"
    assert put(base + "/api/test/mail/run-1", b"mail 1")[0] == 201
    assert put(base + "/api/test/mail/run-2", b"mail 2")[0] == 201
    assert json.loads(get(base + "/api/test/mail?prefix=run-")[1]) == {"run-1": "mail 1", "run-2": "mail 2"}
    assert json.loads(get(base + "/api/test/mail?prefix=none")[1]) == {}
    assert get(base + "/api/test/mail?prefix=..%2F")[0] == 400
    assert get(base + "/api/test/mail/absent")[0] == 404
    assert get(base + "/api/test/mail/..%2Fescape")[0] == 400

    (tmp_path / "version").write_text("5.1.102\n")
    upgraded = cli(env, "setup", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert (tmp_path / "postgresql" / "bluemind.schema-version").read_text().strip() == "5.1.102"
    # The running core keeps reporting the version it was started from.
    assert json.loads(get(base + "/api/system/installation/_infos")[1])["softwareVersion"] == "5.1.101"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0


def test_cli_refuses_without_the_database_directory(tmp_path):
    env = dict(os.environ, BM_STANDIN_DB_DIR=str(tmp_path / "absent"), BM_STANDIN_ETC_DIR=str(tmp_path / "etc"))
    assert cli(env, "setup", "install", "--external-url", "x", "--domain", "y", "--admin0-pass", "a",
               "--sw-pass", "z").returncode == 2
    assert cli(env, "setup", "upgrade").returncode == 1
    assert not (tmp_path / "etc").exists()


def test_check_core_without_a_core():
    assert check_core(f"http://127.0.0.1:{free_port()}/api/system/installation/state") == 2


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
def test_nginx_proxies_the_api_over_https(core, tmp_path):
    _proc, base, _env = core
    wait_for(lambda: state(base))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    port = free_port()
    env = dict(os.environ, BM_NGINX_BIND="127.0.0.1", BM_NGINX_PORT=str(port), BM_NGINX_CERT=str(cert),
               BM_NGINX_KEY=str(key), BM_NGINX_UPSTREAM=base.rpartition("/")[2])
    proxy = subprocess.Popen([sys.executable, str(PROXY)], env=env, stderr=subprocess.DEVNULL)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        front = f"https://127.0.0.1:{port}"
        status, body = wait_for(lambda: get(front + "/api/system/installation/state", context))
        assert status == 200 and json.loads(body).startswith("CORE_STATE_")
        assert get(front + "/", context)[0] == 200
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(timeout=5) == 0
    finally:
        if proxy.poll() is None:
            proxy.kill()
        proxy.wait()


def test_postgres_holds_its_directory_and_stops_cleanly(tmp_path):
    data = tmp_path / "postgresql"
    env = dict(os.environ, BM_STANDIN_DB_DIR=str(data))
    proc = subprocess.Popen([sys.executable, str(POSTGRES)], env=env, stderr=subprocess.DEVNULL)
    try:
        pidfile = data / "postmaster.pid"
        wait_for(lambda: pidfile.exists() and pidfile.read_text().split())
        assert int(pidfile.read_text().split()[0]) == proc.pid
        assert os.readlink(f"/proc/{proc.pid}/cwd") == str(data)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert not pidfile.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
