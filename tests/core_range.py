#!/usr/bin/env python
"""Sanity and unit tests on every ansible-core minor the collection claims
(meta/runtime.yml's requires_ansible, from its floor to the newest that installs
on this Python), as ``make core-range`` runs them. Standard library only.

Each version gets a virtual environment of its own, .cache/venv-core/<minor>
(under .cache/, which git, yamllint, ansible-lint and the collection build all
ignore), with the pinned ansible-core and tests/requirements-core-range.txt; it is
reused while those pins and the Python are the same (stamp file), rebuilt
otherwise. Then, for each version: ansible-test sanity as tests/sanity/run.py
runs it (its temporary collection tree, the version's empty ignore file), and
the unit tests (tests/unit). A table version / sanity / unit / seconds ends the
output; the exit status is non-zero when any version failed.

    tests/core_range.py                      every version
    tests/core_range.py --versions 2.16,2.17
    tests/core_range.py --stages unit        only the unit tests
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "tests" / "requirements-core-range.txt"
VENVS = ROOT / ".cache" / "venv-core"
# The newest patch release of each minor on PyPI when the list was last updated;
# ansible-core before 2.19 caps resolvelib below 1.1.0.
VERSIONS = {
    "2.16": ["ansible-core==2.16.19", "resolvelib==1.0.1"],
    "2.17": ["ansible-core==2.17.14", "resolvelib==1.0.1"],
    "2.18": ["ansible-core==2.18.19", "resolvelib==1.0.1"],
    "2.19": ["ansible-core==2.19.14", "resolvelib==1.2.1"],
}
STAGES = ("sanity", "unit")


def load_sanity_runner():
    spec = importlib.util.spec_from_file_location("sanity_run", ROOT / "tests" / "sanity" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def venv(minor: str) -> Path:
    """The virtual environment of one ansible-core minor, made or reused; its bin."""
    path = VENVS / minor
    stamp = path / ".installed"
    pins = "\n".join([f"python {sys.version.split()[0]}", *VERSIONS[minor], REQUIREMENTS.read_text()])
    if stamp.exists() and stamp.read_text() == pins:
        print(f"{path.relative_to(ROOT)}: reused (same pins)", flush=True)
        return path / "bin"
    if path.exists():
        shutil.rmtree(path)
    print(f"{path.relative_to(ROOT)}: creating ({', '.join(VERSIONS[minor])})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", *VERSIONS[minor],
                          "-r", str(REQUIREMENTS)], capture_output=True, text=True, check=False)
    if pip.returncode:
        print(pip.stdout + pip.stderr)
        raise subprocess.CalledProcessError(pip.returncode, pip.args)
    stamp.write_text(pins)
    return path / "bin"


def run_unit(bin_dir: Path) -> tuple[int, str]:
    """pytest tests/unit with the version's Python; (exit status, pytest's counts)."""
    argv = [str(bin_dir / "python"), "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/unit"]
    print("+ " + " ".join(argv), flush=True)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    env.setdefault("PY_COLORS", "0")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    last = ""
    for line in proc.stdout:
        sys.stdout.write(line)
        if re.search(r"\d+ (passed|failed|error)", line):
            last = line.strip(" =\n")
    proc.wait()
    counts = ", ".join(re.findall(r"\d+ (?:passed|failed|skipped|errors?|xfailed|xpassed)", last))
    return proc.returncode, counts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--versions", default=",".join(VERSIONS),
                        help=f"comma-separated ansible-core minors (default: {','.join(VERSIONS)})")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated: sanity, unit (default: both)")
    args = parser.parse_args(argv)
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [v for v in versions if v not in VERSIONS] + [s for s in stages if s not in STAGES]
    if unknown or not versions or not stages:
        parser.error(f"unknown or empty: {', '.join(unknown) or '-'}; versions: {', '.join(VERSIONS)};"
                     f" stages: {', '.join(STAGES)}")
    if not (ROOT / ".collections" / "ansible_collections" / "bluemind_ha" / "cluster").exists():
        print("the unit tests import the collection through .collections: run `make venv` or `make core-range`")
        return 2
    sanity = load_sanity_runner()
    rows = []
    for minor in versions:
        print(f"\n===== ansible-core {minor} =====", flush=True)
        started = time.monotonic()
        outcome = {s: "-" for s in STAGES}
        try:
            bin_dir = venv(minor)
        except subprocess.CalledProcessError as exc:
            print(f"the virtual environment of {minor} could not be made: {exc}")
            rows.append((minor, "no venv", "no venv", time.monotonic() - started))
            continue
        installed = subprocess.run([str(bin_dir / "python"), "-c", "import ansible.release as r; print(r.__version__)"],
                                   capture_output=True, text=True, check=False).stdout.strip()
        if "sanity" in stages:
            print(f"----- sanity, ansible-core {installed} -----", flush=True)
            outcome["sanity"] = "passed" if sanity.run_sanity(bin_dir, []) == 0 else "FAILED"
        if "unit" in stages:
            print(f"----- unit, ansible-core {installed} -----", flush=True)
            rc, counts = run_unit(bin_dir)
            outcome["unit"] = f"{'passed' if rc == 0 else 'FAILED'} ({counts or 'no tests ran'})"
        rows.append((installed or minor, outcome["sanity"], outcome["unit"], time.monotonic() - started))
    print("\n===== ansible-core range =====")
    print(f"  {'ansible-core':13} {'sanity':8} {'unit':38} {'seconds':>8}")
    for version, sanity_result, unit_result, seconds in rows:
        print(f"  {version:13} {sanity_result:8} {unit_result:38} {seconds:8.1f}")
    failed = [r[0] for r in rows if "FAILED" in r[1] + r[2] or "no venv" in r[1]]
    print(f"core-range: {len(rows) - len(failed)} passed, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
