"""Cost of the fidelity study on the embedded market (4 owners, all 15 coalitions, 2 orders).

Runs ``fairpool fidelity --market`` and records the wall time of the arithmetic route (n
fine-tunings, then arithmetic) against retraining (sequential DPO over 2 orders plus DPO on
the union for every coalition): the cost claim of n fine-tunings instead of 2ⁿ − 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def measure(env: dict, timeout_s: float = 1800) -> dict[str, dict]:
    fairpool = Path(sys.executable).with_name("fairpool")
    with tempfile.TemporaryDirectory(prefix="fairpool-fidelity-bench-") as scratch:
        out = Path(scratch) / "out"
        subprocess.run([str(fairpool), "fidelity", "--market", "--out", str(out)], env=env, check=True,
                       timeout=timeout_s, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        report = json.loads((out / "fidelity.json").read_text())
    cost = report["cost"]
    arith = cost["arithmetic"]["seconds"]
    retrain = cost["sequential"]["seconds"] + cost["union"]["seconds"]
    tunings = {route: cost[route]["fine_tunings"] for route in ("arithmetic", "sequential", "union")}
    note = "fairpool fidelity --market: 4 owners, 15 coalitions, 2 orders of sequential DPO, default spec"
    return {
        "fidelity_n4_arith_s": {"value": round(arith, 2), "unit": "s", "fine_tunings": tunings["arithmetic"],
                                "note": note},
        "fidelity_n4_retrain_s": {"value": round(retrain, 2), "unit": "s",
                                  "fine_tunings": tunings["sequential"] + tunings["union"], "note": note},
        "fidelity_n4_retrain_over_arith": {"value": round(retrain / arith, 2), "unit": "x", "note": note},
    }
