"""Failover report: the lab's power-off failover measurements as a JSON summary,
a markdown table and one SVG timeline per scenario.

Input: the files the scenarios' checks write, LOGS/bluemind-failover-<scenario>.json
(test_bluemind, one entry per power-off run: total seconds to CORE_STATE_RUNNING
through the floating IP, seconds until the survivor held the floating IP, the
survivor controller's activation steps from its journal, the writes the client
had acknowledged). LAB_FAILOVER_RUNS=5 makes five runs a scenario; the benchmark
(tests/lab/benchmark.py) writes the same file under LOGS/benchmark/.

    python3 tools/failover_report.py [--logs DIR] [--out DIR] [--advert-int S] [--priority NODE=P ...]

Phases of one run, in order, from the power-off:
  detection   until the survivor holds the floating IP (VRRP master down)
  fencing     the survivor's fence agent powering the lost node off during the
              claim (runs with fence_seconds: the benchmark's, DRBD's fence-peer)
  claim       the storage claim (DRBD: promote; SAN: reserve or preempt), less the fencing
  mount, expose, mark, start, ready
              the controller's other activation steps (ready: BlueMind answers)
  first request
              what remains until a request through the floating IP succeeds
The controller's steps are durations; the timeline places them one after the
other from the detection on (the activation starts on the MASTER notify).

The protocol's floor is VRRP's master-down interval for the survivor:
3 x advert_int + (256 - priority) / 256 x advert_int (RFC 3768). The ratio of the
measured failover to it compares results across machines. Priorities default to
the keepalived role's rule for the lab (node1 150, node2 100).
"""
from __future__ import annotations

import argparse
import html
import json
import re
import statistics
import sys
from pathlib import Path

STEPS = ("claim", "mount", "expose", "mark", "start", "ready")
PHASES = ("detection", "fencing") + STEPS + ("first request",)
COLOURS = {"detection": "#d62728", "fencing": "#9467bd", "claim": "#ff7f0e", "mount": "#bcbd22", "expose": "#8c564b",
           "mark": "#7f7f7f", "start": "#1f77b4", "ready": "#17becf", "first request": "#2ca02c"}
STEP_LINE = re.compile(r"step=(?P<step>\w+) outcome=\w+ seconds=(?P<seconds>[0-9.]+)")


def master_down_interval(advert_int: float, priority: int) -> float:
    return 3 * advert_int + (256 - priority) / 256 * advert_int


def phases(run: dict) -> dict[str, float]:
    """Seconds per phase of one run; the steps from the controller's journal lines."""
    steps = {}
    for line in run.get("steps", []):
        match = STEP_LINE.search(line)
        if match and match["step"] in STEPS:
            steps[match["step"]] = float(match["seconds"])
    out = {"detection": float(run["vip_seconds"])}
    out.update({step: steps.get(step, 0.0) for step in STEPS})
    # The storage claim's call to the fence agent (DRBD's fence-peer), when the
    # run recorded it: a phase of its own, carved out of the claim.
    out["fencing"] = min(float(run.get("fence_seconds") or 0.0), out["claim"])
    out["claim"] -= out["fencing"]
    out = {phase: out[phase] for phase in PHASES if phase in out}
    out["first request"] = max(0.0, float(run["seconds"]) - sum(out.values()))
    return out


def summarise(scenario: str, data: dict, advert_int: float, priorities: dict[str, int]) -> dict:
    runs = []
    for run in data["runs"]:
        floor = master_down_interval(advert_int, priorities.get(run["to"], 100))
        runs.append({"from": run["from"], "to": run["to"], "seconds": float(run["seconds"]),
                     "writes_acknowledged": run.get("writes_acknowledged"),
                     "writes_lost": run.get("writes_lost", 0),
                     "floor_seconds": round(floor, 2), "ratio_to_floor": round(float(run["seconds"]) / floor, 1),
                     "phases": {k: round(v, 2) for k, v in phases(run).items()}})
    if not runs:
        raise ValueError(f"{scenario}: no run in the file")
    seconds = [r["seconds"] for r in runs]
    return {"scenario": scenario, "runs": runs, "median": statistics.median(seconds), "min": min(seconds),
            "max": max(seconds),
            "median_phases": {p: round(statistics.median(r["phases"][p] for r in runs), 2) for p in PHASES},
            "median_ratio_to_floor": statistics.median(r["ratio_to_floor"] for r in runs)}


def markdown(summaries: list[dict]) -> str:
    lines = ["| scenario | runs | median s | min s | max s | x VRRP floor | "
             + " | ".join(PHASES) + " | writes lost |",
             "|---" * (7 + len(PHASES)) + "|"]
    for s in summaries:
        lost = sum(r["writes_lost"] for r in s["runs"])
        lines.append(f"| {s['scenario']} | {len(s['runs'])} | {s['median']:.1f} | {s['min']:.1f} | {s['max']:.1f} | "
                     f"{s['median_ratio_to_floor']:.1f} | "
                     + " | ".join(f"{s['median_phases'][p]:.1f}" for p in PHASES) + f" | {lost} |")
    lines.append("")
    lines.append("Phases: medians in seconds, from the power-off of the active node to the first request "
                 "answered CORE_STATE_RUNNING through the floating IP. Writes lost: acknowledged writes not "
                 "read back on the survivor (the check fails on any, so a written file has 0).")
    return "\n".join(lines) + "\n"


def svg(summary: dict, scale: float = 12.0) -> str:
    """One bar a run, a segment a phase, seconds on the x axis."""
    runs = summary["runs"]
    longest = max(sum(r["phases"].values()) for r in runs)
    left, top, bar_height, gap = 90, 40, 22, 10
    legend_width = sum(14 + 7 * len(phase) + 16 for phase in PHASES)
    width = int(left + max(longest * scale, legend_width) + 40)
    height = top + len(runs) * (bar_height + gap) + 70
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="14">Power-off failover, {html.escape(summary["scenario"])}: '
           f'median {summary["median"]:.1f} s ({summary["median_ratio_to_floor"]:.1f} x the VRRP floor)</text>']
    for i, run in enumerate(runs):
        y = top + i * (bar_height + gap)
        out.append(f'<text x="10" y="{y + 15}">{html.escape(run["from"])}&#8594;{html.escape(run["to"])}</text>')
        x = float(left)
        for phase in PHASES:
            w = run["phases"][phase] * scale
            if w > 0:
                out.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_height}" fill="{COLOURS[phase]}">'
                           f'<title>{phase}: {run["phases"][phase]:.2f} s</title></rect>')
            x += w
        floor_x = left + run["floor_seconds"] * scale
        out.append(f'<line x1="{floor_x:.1f}" y1="{y - 3}" x2="{floor_x:.1f}" y2="{y + bar_height + 3}" '
                   'stroke="black" stroke-dasharray="3,2"/>')
    axis_y = top + len(runs) * (bar_height + gap)
    for second in range(0, int(longest) + 1, 5):
        x = left + second * scale
        out.append(f'<text x="{x:.1f}" y="{axis_y + 12}" text-anchor="middle">{second}</text>')
    legend_y = axis_y + 35
    x = float(left)
    for phase in PHASES:
        out.append(f'<rect x="{x:.1f}" y="{legend_y - 10}" width="10" height="10" fill="{COLOURS[phase]}"/>')
        out.append(f'<text x="{x + 14:.1f}" y="{legend_y}">{phase}</text>')
        x += 14 + 7 * len(phase) + 16
    out.append(f'<text x="{left}" y="{legend_y + 20}">seconds from the power-off; dashed: the VRRP floor</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def parse_priorities(values: list[str]) -> dict[str, int]:
    priorities = {"node1": 150, "node2": 100}
    for value in values:
        node, sep, number = value.partition("=")
        if not sep or not number.isdigit() or not 1 <= int(number) <= 254:
            raise ValueError(f"--priority {value}: expected NODE=P with P between 1 and 254")
        priorities[node] = int(number)
    return priorities


def main(argv: list[str]) -> int:
    default_logs = Path.home() / ".cache" / "bluemind-ha-lab" / "logs"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--logs", type=Path, default=default_logs, help="where the scenarios wrote their results")
    parser.add_argument("--out", type=Path, help="where to write the report (default: --logs)")
    parser.add_argument("--advert-int", type=float, default=1.0, help="keepalived_advert_int of the runs")
    parser.add_argument("--priority", action="append", default=[], metavar="NODE=P",
                        help="VRRP priority of a node (default node1=150, node2=100)")
    args = parser.parse_args(argv)
    try:
        priorities = parse_priorities(args.priority)
    except ValueError as exc:
        parser.error(str(exc))
    files = sorted(args.logs.glob("bluemind-failover-*.json"))
    if not files:
        print(f"failover_report: no bluemind-failover-*.json in {args.logs}: run a scenario first "
              "(LAB_FAILOVER_RUNS=5 make molecule-drbd)", file=sys.stderr)
        return 2
    out = args.out or args.logs
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for path in files:
        scenario = path.stem.removeprefix("bluemind-failover-")
        summary = summarise(scenario, json.loads(path.read_text()), args.advert_int, priorities)
        summaries.append(summary)
        (out / f"failover-{scenario}.svg").write_text(svg(summary))
    (out / "failover-report.json").write_text(json.dumps(summaries, indent=2) + "\n")
    table = markdown(summaries)
    (out / "failover-report.md").write_text(table)
    print(table, end="")
    print(f"written: {out}/failover-report.json, failover-report.md, "
          + ", ".join(f"failover-{s['scenario']}.svg" for s in summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
