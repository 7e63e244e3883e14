import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared" / "tests"))

# On a failed check, every VM's state and journal (before destroy removes them).
import failure_state  # noqa: E402  pylint: disable=wrong-import-position
# Shared checks that one scenario proves for both run there only.
import scenario_scope  # noqa: E402  pylint: disable=wrong-import-position

pytest_runtest_makereport = failure_state.pytest_runtest_makereport
pytest_configure = scenario_scope.pytest_configure
pytest_collection_modifyitems = scenario_scope.pytest_collection_modifyitems
