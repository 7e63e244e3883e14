"""The outages a lab client saw: test instrument of the lab's checks
(pairstate.Client), apart so that unit tests can import it without a lab."""
from __future__ import annotations

import bisect


def outage_runs(errors: list[tuple[int, float, str]], acked: list[int]) -> list[float]:
    """Runs of failed requests (number, start, kind) split by any acknowledged
    request number between them; the seconds of each run."""
    acked = sorted(acked)
    runs: list[list[tuple[int, float, str]]] = []
    for error in sorted(errors):
        if runs:
            previous = runs[-1][-1][0]
            served = bisect.bisect_right(acked, previous) < bisect.bisect_left(acked, error[0])
            if not served:
                runs[-1].append(error)
                continue
        runs.append([error])
    return [round(run[-1][1] - run[0][1] + 0.2, 1) for run in runs]
