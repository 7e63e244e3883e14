"""Make the collection importable as ansible_collections.bluemind_ha.cluster when
pytest runs from the checkout (make venv links .collections to it)."""
import importlib.util
import sys
import syslog
from pathlib import Path

import pytest

COLLECTIONS = Path(__file__).resolve().parents[2] / ".collections"
if COLLECTIONS.is_dir() and str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
# The node library, which the programs import from their own directory on the hosts.
NODE_LIBRARY = Path(__file__).resolve().parents[2] / "roles" / "node" / "files"


@pytest.fixture()
def load_program(monkeypatch):
    """Import one of the roles' standalone programs (installed alone on the hosts,
    so not a module of the collection) under a private name, its syslog calls
    going nowhere. The node library they import is found where the role node
    keeps it (on the hosts, it sits beside them)."""
    monkeypatch.syspath_prepend(str(NODE_LIBRARY))

    def load(path: Path):
        spec = importlib.util.spec_from_file_location(f"{path.stem}_under_test", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        monkeypatch.setattr(syslog, "syslog", lambda *a: None)
        return module
    return load
