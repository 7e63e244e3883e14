"""tests/lab/benchmark.py: the parts that read logs and write the report (the
runs themselves drive the lab's VMs: `make benchmark`)."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SPEC = importlib.util.spec_from_file_location("benchmark", ROOT / "tests" / "lab" / "benchmark.py")
benchmark = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(benchmark)

# The fencing agent's log on the survivor (roles/fencing/files/bluemind_ha_fence.py's lines).
FENCE_LOG = """2026-11-27T06:10:01.100 call: off of peer node1 by node2
2026-11-27T06:10:09.500 off: done on node1 (controller redfish 10.0.2.100:443) in 8.4 s
2026-11-27T06:18:17.000 call: off of peer node1 by node2
2026-11-27T06:18:17.908 off: node1 (controller redfish 10.0.2.100:443) is already off
2026-11-27T06:18:27.802 call: on of peer node1 by node2
"""


def test_fence_seconds_reads_the_call_and_its_outcome_after_the_given_time():
    assert benchmark.fence_seconds(FENCE_LOG, "node1", "2026-11-27T06:00:00") == pytest.approx(8.4)
    # The later power-off, which found the node already off.
    assert benchmark.fence_seconds(FENCE_LOG, "node1", "2026-11-27T06:15:00") == pytest.approx(0.91)
    # Nothing about this node, or nothing after the time: no fencing.
    assert benchmark.fence_seconds(FENCE_LOG, "node2", "2026-11-27T06:00:00") is None
    assert benchmark.fence_seconds(FENCE_LOG, "node1", "2026-11-27T07:00:00") is None


def test_markdown_gives_median_min_max_and_the_losses():
    run = {"from": "node1", "to": "node2"}
    data = {"storage": "drbd", "runs": 3, "date": "2026-11-27 13:00 UTC",
            "machine": {"cpu": "Test CPU", "cores": 2, "memory_gib": 23.5, "acceleration": "tcg (software emulation)"},
            "fresh_site": [{"seconds": 400.0, "changed": 90}],
            "noop_site": [{"seconds": 200.0, "changed": 0}, {"seconds": 210.0, "changed": 1}],
            "switchover": [dict(run, unavailable_seconds=s, client_error_window_seconds=s + 1, writes_lost=0)
                           for s in (30.0, 34.0, 31.0)],
            "failover": [dict(run, seconds=s, vip_seconds=3.5, writes_lost=lost) for s, lost in ((24.0, 0), (26.0, 2))]}
    table = benchmark.markdown(data).splitlines()
    assert "drbd, 3 run(s) each" in table[0] and "Test CPU, 2 cores" in table[0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table[4:]}
    assert rows["fresh deployment: site.yml"].startswith("| fresh deployment: site.yml | 1 | 400.0 | 400.0 | 400.0 |")
    assert "| 2 | 205.0 | 200.0 | 210.0 | changed tasks: [0, 1] |" in rows["no-op re-run of site.yml"]
    assert "| 3 | 31.0 | 30.0 | 34.0 | writes lost: 0 |" in rows["switchover: unavailable (playbook)"]
    assert "| 2 | 25.0 | 24.0 | 26.0 | writes lost: 2 |" in rows["power-off failover: first request acknowledged"]


def test_runs_must_be_positive():
    with pytest.raises(SystemExit) as exc:
        benchmark.main(["--runs", "0"])
    assert exc.value.code == 2
