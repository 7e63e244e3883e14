#!/usr/bin/env python
"""Run ``ansible-test sanity`` on this checkout.

ansible-test insists on running from ``ansible_collections/<ns>/<name>``; the
checkout is the collection root, so this script copies the files git knows about
(tracked and untracked-but-not-ignored) into a temporary tree and runs there, on
the local Python, with no container. Ignore files stay empty: a finding fails.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
# ansible-test's --venv mode downloads a pip bootstrap script from a host this
# machine cannot reach, so sanity runs on the origin Python of a virtual
# environment of its own: the pinned ansible-core, plus the requirements
# ansible-test installs (pinned by ansible-test itself) with --requirements,
# without disturbing the project's .venv.
SANITY_VENV = ROOT / ".venv-sanity"


def sanity_venv() -> Path:
    marker = SANITY_VENV / ".installed"
    pins = (ROOT / "requirements.txt").read_text()
    if not marker.exists() or marker.read_text() != pins:
        subprocess.run([sys.executable, "-m", "venv", str(SANITY_VENV)], check=True)
        subprocess.run([str(SANITY_VENV / "bin" / "pip"), "install", "-q", "-r", str(ROOT / "requirements.txt")],
                       check=True)
        marker.write_text(pins)
    return SANITY_VENV / "bin"


def offline_pip(bin_dir: Path) -> None:
    """ansible-test makes one virtual environment per sanity test and bootstraps pip in
    it with a script it downloads from a host out of reach; give it a local one."""
    version = subprocess.run(
        [str(bin_dir / "python"), "-c",
         "from ansible_test._internal.python_requirements import get_venv_packages as g;"
         "from types import SimpleNamespace as N; print(g(N(version='" + PY + "'))['pip'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    cache = Path.home() / ".ansible" / "test" / "cache" / f"get_pip_{version.replace('.', '_')}.py"
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "tests" / "sanity" / "get_pip_offline.py", cache)


def core_minor(bin_dir: Path) -> str:
    """The ansible-core minor version (2.19) installed beside bin_dir's python."""
    return subprocess.run(
        [str(bin_dir / "python"), "-c",
         "from ansible.release import __version__ as v; print('.'.join(v.split('.')[:2]))"],
        check=True, capture_output=True, text=True).stdout.strip()


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode()
    return [p for p in out.split("\0") if p and (ROOT / p).is_file()]


def run_sanity(bin_dir: Path, args: list[str]) -> int:
    """ansible-test sanity of the ansible-core beside bin_dir's python (the pinned one
    of .venv-sanity, or one of tests/core_range.py's), in a temporary collection tree.
    Each version's ignore file exists and is empty."""
    minor = core_minor(bin_dir)
    if not (ROOT / "tests" / "sanity" / f"ignore-{minor}.txt").is_file():
        print(f"tests/sanity/ignore-{minor}.txt is missing (an empty file for ansible-core {minor})", file=sys.stderr)
        return 1
    for ignore in (ROOT / "tests" / "sanity").glob("ignore-*.txt"):
        if ignore.read_text().strip():
            print(f"{ignore} must stay empty", file=sys.stderr)
            return 1
    offline_pip(bin_dir)
    with tempfile.TemporaryDirectory(prefix="bmha-sanity-") as tmp:
        dest = Path(tmp) / "ansible_collections" / "bluemind_ha" / "cluster"
        for rel in tracked_files():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target)
        # ansible-test needs a git tree or it scans everything, including venvs.
        subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
        subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
        env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        env.pop("ANSIBLE_COLLECTIONS_PATH", None)
        env.pop("ANSIBLE_CONFIG", None)
        cmd = [str(bin_dir / "ansible-test"), "sanity", "--python", PY, "--requirements",
               "--color", "no", *args]
        print("+", " ".join(cmd), flush=True)
        return subprocess.run(cmd, cwd=dest, env=env, check=False).returncode


def main() -> int:
    return run_sanity(sanity_venv(), sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
