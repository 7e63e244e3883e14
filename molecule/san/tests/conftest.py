import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared" / "tests"))

# On a failed check, every VM's state and journal (before destroy removes them).
import failure_state  # noqa: E402  pylint: disable=wrong-import-position

pytest_runtest_makereport = failure_state.pytest_runtest_makereport
