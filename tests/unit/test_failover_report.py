"""tools/failover_report.py on results in the format test_bluemind writes
(molecule/shared/tests/test_bluemind.py, bluemind-failover-<scenario>.json)."""
import importlib.util
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("failover_report", ROOT / "tools" / "failover_report.py")
report = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(report)

NS = "{http://www.w3.org/2000/svg}"
# Two runs as the lab records them (journal lines of the survivor's controller).
RESULTS = {"runs": [
    {"seconds": 31.9, "vip_seconds": 3.3, "cycle_seconds": 97.0, "writes_acknowledged": 412, "from": "node1",
     "to": "node2", "webhook_seconds": 27.1,
     "steps": ["activate: step=claim outcome=changed seconds=19.4", "activate: step=mount outcome=changed seconds=0.2",
               "activate: step=expose outcome=changed seconds=1.2", "activate: step=mark outcome=changed seconds=0.0",
               "activate: step=start outcome=changed seconds=2.0", "activate: step=ready outcome=unchanged seconds=4.3"]},
    {"seconds": 40.0, "vip_seconds": 3.0, "cycle_seconds": 90.0, "writes_acknowledged": 300, "from": "node2",
     "to": "node1", "webhook_seconds": 30.0,
     "steps": ["activate: step=claim outcome=changed seconds=30.0", "activate: step=start outcome=changed seconds=2.0"]},
], "median": 35.95}


def test_the_vrrp_floor_is_the_master_down_interval():
    # RFC 3768: 3 x advert + skew, skew = (256 - priority) / 256 x advert.
    assert report.master_down_interval(1.0, 100) == pytest.approx(3.609375)
    assert report.master_down_interval(2.0, 150) == pytest.approx(6.828125)


def test_phases_add_up_to_the_measured_total():
    phases = report.phases(RESULTS["runs"][0])
    assert phases["detection"] == 3.3 and phases["claim"] == 19.4 and phases["ready"] == 4.3
    assert phases["first request"] == pytest.approx(31.9 - 3.3 - 19.4 - 0.2 - 1.2 - 0.0 - 2.0 - 4.3)
    assert sum(phases.values()) == pytest.approx(31.9)
    # A step missing from the journal counts 0; what remains is the first request.
    second = report.phases(RESULTS["runs"][1])
    assert second["mount"] == 0.0 and second["first request"] == pytest.approx(5.0)


def test_summary_uses_the_survivor_s_priority_for_the_floor():
    summary = report.summarise("drbd", RESULTS, 1.0, {"node1": 150, "node2": 100})
    first, second = summary["runs"]
    assert first["floor_seconds"] == 3.61 and second["floor_seconds"] == 3.41
    assert first["ratio_to_floor"] == round(31.9 / 3.609375, 1)
    assert summary["median"] == pytest.approx(35.95) and summary["min"] == 31.9 and summary["max"] == 40.0
    assert summary["median_phases"]["claim"] == pytest.approx(24.7)


def test_cli_writes_json_markdown_and_one_svg_per_scenario(tmp_path, capsys):
    (tmp_path / "bluemind-failover-drbd.json").write_text(json.dumps(RESULTS))
    (tmp_path / "bluemind-failover-san.json").write_text(json.dumps({"runs": RESULTS["runs"][:1]}))
    assert report.main(["--logs", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    summaries = json.loads((out / "failover-report.json").read_text())
    assert [s["scenario"] for s in summaries] == ["drbd", "san"]
    table = (out / "failover-report.md").read_text().splitlines()
    assert table[2].startswith("| drbd | 2 | 36.0 | 31.9 | 40.0 |")
    assert table[3].startswith("| san | 1 | 31.9 |")
    # One segment per phase with a duration: the first run has all but mark (0 s),
    # the second detection, claim, start and the first request.
    for scenario, segments in (("drbd", 7 + 4), ("san", 7)):
        svg = ET.fromstring((out / f"failover-{scenario}.svg").read_text())
        bars = [e for e in svg.iter(f"{NS}rect") if e.find(f"{NS}title") is not None]
        assert len(bars) == segments, scenario
    assert "drbd" in capsys.readouterr().out


def test_cli_refuses_missing_results_and_bad_priorities(tmp_path, capsys):
    assert report.main(["--logs", str(tmp_path)]) == 2
    assert "no bluemind-failover-*.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        report.main(["--logs", str(tmp_path), "--priority", "node1=300"])
    assert exc.value.code == 2
    assert "between 1 and 254" in capsys.readouterr().err


def test_fencing_is_carved_out_of_the_claim_when_recorded():
    run = dict(RESULTS["runs"][0], fence_seconds=6.5)
    phases = report.phases(run)
    assert phases["fencing"] == 6.5 and phases["claim"] == pytest.approx(19.4 - 6.5)
    assert sum(phases.values()) == pytest.approx(31.9)
    assert list(phases) == list(report.PHASES)
    # A fencing longer than the claim it ran in cannot be: bounded by the claim.
    assert report.phases(dict(run, fence_seconds=50))["fencing"] == 19.4
    # Without a record, no fencing phase (0 s) and the claim unchanged.
    assert report.phases(RESULTS["runs"][0])["fencing"] == 0.0


def test_the_svg_is_wide_enough_for_its_legend(tmp_path):
    # A short failover: the legend (one entry a phase) is wider than the bars.
    short = {"runs": [dict(RESULTS["runs"][0], seconds=5.0, vip_seconds=1.0, steps=[])]}
    summary = report.summarise("san", short, 1.0, {"node1": 150, "node2": 100})
    svg = ET.fromstring(report.svg(summary))
    texts = [e for e in svg.iter(f"{NS}text") if e.text in report.PHASES]
    assert len(texts) == len(report.PHASES)
    last = texts[-1]
    assert float(last.get("x")) + 7 * len(last.text) <= float(svg.get("width"))
