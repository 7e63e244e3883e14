"""The execution environment files (issue 31): the Python requirements the
collection declares for an execution environment (meta/execution-environment.yml)
are exactly the third-party packages its controller-side plugins import, and the
example definition builds from the tarball of the current version. The build
stage of tests/run_suite.py runs ansible-builder itself (introspect, create)."""
import ast
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
META = ROOT / "meta" / "execution-environment.yml"
EXAMPLE = ROOT / "docs" / "examples" / "ee" / "execution-environment.yml"
# Import names that are not distribution names (none today): import -> PyPI name.
DISTRIBUTIONS: dict[str, str] = {}


def third_party_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    ours = ("ansible", "ansible_collections", "__future__")
    return {n for n in names if n not in sys.stdlib_module_names and n not in ours}


def declared(kind: str) -> list[str]:
    meta = yaml.safe_load(META.read_text())
    assert meta["version"] == 1
    lines = (ROOT / meta["dependencies"][kind]).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_the_python_requirements_are_the_plugins_third_party_imports():
    imported = set()
    for plugin in (ROOT / "plugins").rglob("*.py"):
        imported |= third_party_imports(plugin)
    names = {re.split(r"[<>=!~\[ ;]", requirement)[0].lower() for requirement in declared("python")}
    assert names == {DISTRIBUTIONS.get(n, n).lower() for n in imported}, (names, imported)


def test_the_system_requirements_bring_the_ssh_client_on_both_families():
    system = declared("system")
    assert "openssh-clients [platform:rpm]" in system and "openssh-client [platform:dpkg]" in system


def test_the_example_definition_installs_the_tarball_of_the_current_version():
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    tarball = f"bluemind_ha-cluster-{version}.tar.gz"
    definition = yaml.safe_load(EXAMPLE.read_text())
    assert definition["version"] == 3
    assert [f["src"] for f in definition["additional_build_files"]] == [tarball]
    assert definition["dependencies"]["galaxy"]["collections"] == [{"name": f"/build/{tarball}", "type": "file"}]
    assert any(tarball in step for step in definition["additional_build_steps"]["prepend_galaxy"])
    # The range the collection claims (meta/runtime.yml) and Python 3.11's ceiling.
    requires = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["requires_ansible"]
    assert requires.startswith(">=2.16") and definition["dependencies"]["ansible_core"]["package_pip"] == \
        "ansible-core>=2.16,<2.20"
