"""tests/run_suite.py: what a failed scenario prints at its end, where CI's reader
sees it (pytest's own report of the failure sits far above)."""
import importlib.util
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("run_suite", ROOT / "tests" / "run_suite.py")
suite = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(suite)

# The shape of a molecule verify's pytest output (trimmed).
OUTPUT = """\
tests/test_bluemind.py ....FF                                            [ 15%]

==================================== ERRORS ====================================
E       RuntimeError: ssh: connect to host 127.0.0.1 port 34611: Connection refused
E       RuntimeError: ssh: connect to host 127.0.0.1 port 34611: Connection refused
=================================== FAILURES ===================================
__________ test_power_off_of_the_active_node_loses_no_acknowledged_mail __________
>       assert out.rc == 0, f"{node} did not take the floating IP within {timeout} s"
E       AssertionError: node1 did not take the floating IP within 30 s
E       assert 1 == 0
_____ test_a_second_site_run_after_failovers_changes_only_what_was_asked _____
E       RuntimeError: ssh: connect to host 127.0.0.1 port 34611: Connection refused
============================= slowest 12 durations =============================
109.02s call     tests/test_bluemind.py::test_power_off_of_the_passive_node_keeps_the_service_within_its_bound
46.10s call     tests/test_bluemind.py::test_bm_core_crashing_moves_the_service_to_the_peer

=========================== short test summary info ============================
FAILED tests/test_bluemind.py::test_power_off_of_the_active_node_loses_no_acknowledged_mail - AssertionError: node1 did not take the floating IP within 30 s
FAILED tests/test_bluemind.py::test_a_second_site_run_after_failovers - RuntimeError: ssh
========================= 2 failed, 4 passed in 400.00s ========================
san > verify: Executed: Failed (Verifier tests failed)
"""


def test_the_digest_gives_the_failures_lines_first_each_once_then_the_summary_and_the_slowest_checks():
    assert suite.digest(OUTPUT.splitlines()) == [
        "error lines:",
        "E       AssertionError: node1 did not take the floating IP within 30 s",
        "E       assert 1 == 0",
        "E       RuntimeError: ssh: connect to host 127.0.0.1 port 34611: Connection refused",
        "short test summary:",
        "FAILED tests/test_bluemind.py::test_power_off_of_the_active_node_loses_no_acknowledged_mail"
        " - AssertionError: node1 did not take the floating IP within 30 s",
        "FAILED tests/test_bluemind.py::test_a_second_site_run_after_failovers - RuntimeError: ssh",
        "slowest checks:",
        "109.02s call     tests/test_bluemind.py::test_power_off_of_the_passive_node_keeps_the_service_within_its_bound",
        "46.10s call     tests/test_bluemind.py::test_bm_core_crashing_moves_the_service_to_the_peer",
    ]


def test_the_digest_keeps_only_the_first_twelve_error_lines_and_cuts_long_ones():
    lines = [f"E   line {i} " + "x" * 500 for i in range(20)]
    digest = suite.digest(lines, width=100)
    assert digest[0] == "error lines:" and len(digest) == 13
    assert all(len(line) == 100 for line in digest[1:])


def test_nothing_to_digest_from_an_output_without_pytest():
    assert not suite.digest(["TASK [x] ***", "fatal: [node1]: FAILED!"])


def test_the_lab_recoveries_of_this_run_are_reported_and_older_consoles_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    lab = tmp_path / "logs" / "molecule-san"
    lab.mkdir(parents=True)
    (lab / "san-console.log").write_text(
        "[  655.3] virtio_net virtio5 eth3: NETDEV WATCHDOG: CPU: 0: transmit queue 0 timed out 5556 ms\n"
        "[  656.1] lab-nic-watchdog: reset eth3: its transmit queue timed out (0 -> 1)\n"
        "[  656.4] lab-nic-watchdog: eth3 reset and configured again\n")
    (lab / "node1-console.log").write_text("[  656.1] lab-nic-watchdog: reset eth2: asked for\n")
    os.utime(lab / "node1-console.log", (1000, 1000))   # a console of an earlier run
    (lab / "node2-console.log").write_text(
        "[   39.4] rcu: INFO: rcu_preempt self-detected stall on CPU\n"
        "[   64.4] watchdog: BUG: soft lockup - CPU#0 stuck for 45s! [swapper/0:0]\n"
        "[   64.5] Kernel panic - not syncing: softlockup: hung tasks\n")
    assert suite.lab_recoveries("molecule-san", since=2000) == [
        "node2: [   64.5] Kernel panic - not syncing: softlockup: hung tasks",
        "san: [  656.1] lab-nic-watchdog: reset eth3: its transmit queue timed out (0 -> 1)",
        "san: [  656.4] lab-nic-watchdog: eth3 reset and configured again"]
    assert suite.lab_recoveries("molecule-drbd", since=2000) == []


def test_the_summary_says_how_the_host_was_during_each_scenario(monkeypatch, capsys):
    report = suite.hostwatch.Report("molecule-drbd", 2, 10.0, stalls=["node1: watchdog: BUG: soft lockup"])
    monkeypatch.setattr(suite, "STAGES", {"unit": lambda: 0, "molecule-drbd": lambda: 1})
    monkeypatch.setattr(suite, "HOST_REPORTS", {"molecule-drbd": report})
    monkeypatch.setattr(suite, "cleanup", lambda ran: None)
    assert suite.main([]) == 1
    out = capsys.readouterr().out
    table = out[out.index("===== suite summary"):]
    assert " failed " in table and "host OVERSUBSCRIBED" in table
    assert "host" not in next(line for line in table.splitlines() if line.strip().startswith("unit"))


def test_the_gauge_times_the_loop_it_names_and_says_so():
    small = suite.host_gauge(steps=10_000)
    large = suite.host_gauge(steps=400_000)
    assert 0 < small < large
    assert suite.gauge_line(3.14159) == ("host speed: 20M Python additions in 3.14 s on one core"
                                         " (1.11 s on the 2-core Xeon guest whose suite ran 3938 s, 2026-12-07)")
