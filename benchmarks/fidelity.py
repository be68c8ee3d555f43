"""Cost of the fidelity study on the embedded market (4 owners, all 15 coalitions, 1 order).

Runs ``fairpool fidelity --market --orders 1`` and records the study's whole wall time (issue 17
target: at most 5 minutes on 2 cores with nothing else running) and the time of the arithmetic
route (n fine-tunings, then arithmetic) against retraining (sequential DPO plus DPO on the union
for every coalition, each shared model trained once): the cost claim of n fine-tunings instead
of 2ⁿ − 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(env: dict, timeout_s: float = 1800) -> dict[str, dict]:
    fairpool = Path(sys.executable).with_name("fairpool")
    with tempfile.TemporaryDirectory(prefix="fairpool-fidelity-bench-") as scratch:
        out = Path(scratch) / "out"
        started = time.monotonic()
        subprocess.run([str(fairpool), "fidelity", "--market", "--orders", "1", "--out", str(out)], env=env,
                       check=True, timeout=timeout_s, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.monotonic() - started
        report = json.loads((out / "fidelity.json").read_text())
    cost = report["cost"]
    arith = cost["arithmetic"]["seconds"]
    retrain = cost["sequential"]["seconds"] + cost["union"]["seconds"]
    tunings = {route: cost[route]["fine_tunings"] for route in ("arithmetic", "sequential", "union")}
    note = "fairpool fidelity --market --orders 1: 4 owners, 15 coalitions, default spec"
    return {
        "fidelity_n4_study_wall_s": {"value": round(wall, 1), "unit": "s", "target": {"max": 300},
                                     "meets_target": wall <= 300, "note": note,
                                     "stages_in_chains": cost["sequential"].get("stages_in_chains")},
        "fidelity_n4_arith_s": {"value": round(arith, 2), "unit": "s", "fine_tunings": tunings["arithmetic"],
                                "note": note},
        "fidelity_n4_retrain_s": {"value": round(retrain, 2), "unit": "s",
                                  "fine_tunings": tunings["sequential"] + tunings["union"], "note": note},
        "fidelity_n4_retrain_over_arith": {"value": round(retrain / arith, 2), "unit": "x", "note": note},
    }
