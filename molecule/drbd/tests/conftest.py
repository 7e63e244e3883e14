import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared" / "tests"))


def pytest_sessionstart(session):  # pylint: disable=unused-argument
    """One run's waits in LAB_CACHE_DIR/logs/waits-<lab>.log (labtopo.trace)."""
    import labtopo  # pylint: disable=import-outside-toplevel

    labtopo.reset_trace()
