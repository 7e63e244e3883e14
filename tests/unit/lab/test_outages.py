"""molecule/shared/tests/outages.py: how the lab's client outages are counted
(the checks that use them need the lab's VMs: `make test`)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "molecule" / "shared" / "tests"))
import outages  # noqa: E402  pylint: disable=wrong-import-position


def test_no_error_is_no_outage():
    assert outages.outage_runs([], [1, 2, 3]) == []


def test_consecutive_failures_are_one_outage_from_the_first_start_to_the_last_plus_the_pause():
    errors = [(n, 100.0 + 0.4 * (n - 20), "URLError") for n in range(20, 31)]
    assert outages.outage_runs(errors, list(range(1, 20)) + list(range(31, 40))) == [4.2]


def test_an_acknowledged_request_between_failures_splits_them():
    handover = [(n, 100.0 + 0.4 * (n - 20), "URLError") for n in range(20, 31)]
    freeze = [(n, 300.0 + 5.2 * (n - 200), "TimeoutError") for n in range(200, 203)]
    acked = list(range(1, 20)) + list(range(31, 200)) + list(range(203, 210))
    assert outages.outage_runs(freeze + handover, acked) == [4.2, 10.6]
    # The same failures with nothing acknowledged in between: one outage, the span.
    assert outages.outage_runs(freeze + handover, list(range(1, 20))) == [210.6]


def test_a_single_failure_counts_the_pause():
    assert outages.outage_runs([(5, 1.0, "HTTPError")], []) == [0.2]
    assert outages.outage_runs([(5, 1.0, "HTTPError"), (7, 2.0, "HTTPError")], [6]) == [0.2, 0.2]
