# %% [markdown]
# # FairPool from a notebook
#
# Value three data owners from their preference files, read the signed report as typed
# objects and as a pandas frame, verify it, and re-value its stored game with another
# estimator — no model work after the run. Each `# %%` cell runs in Jupyter or VS Code; the
# whole file also runs as a script (`python examples/notebook.py [WORKDIR]`), which the tests do.
#
# The owners here come from FairPool's embedded synthetic market and the embedded tiny base
# model, so the example needs no download; with your data, pass your own files and
# `base_model="path/to/your/hf-model"`.

# %%
import sys
import tempfile
from pathlib import Path

import fairpool
from common.embedded.market import default_profiles, make_market  # the example's data only

workdir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="fairpool-notebook-"))

# %% [markdown]
# Three owners' preference files (any TRL layout: `prompt`/`chosen`/`rejected`, conversational
# messages, ...) and a held-out set. Here: a small market written by the embedded generator.

# %%
market = make_market(workdir / "market", seed=6, profiles=default_profiles(16)[:4], eval_size=30)
owners = {name: market.owners[name] for name in ("clean", "noisy", "flipped")}

# %% [markdown]
# `fairpool.value` runs the same pipeline as `fairpool value`: each owner trains a LoRA
# adapter with DPO in Flower's Simulation Engine, the coordinator composes every coalition by
# arithmetic, computes Shapley values and signs the report.

# %%
report = fairpool.value(owners, eval=market.eval_path, out=workdir / "run", spec={"epochs": 1}, budget=1000,
                        progress=False)
frame = report.to_dataframe()
print(frame[["status", "examples", "preference", "share", "amount"]].round(4).to_string())

# %% [markdown]
# The report is signed by the coordinator's key (created under `run/keys/` for a local run).

# %%
report.verify(workdir / "run" / "keys" / "coordinator.pub")
game = report.game_result()
print(f"v(empty) = {game.empty:.4f}, v(all) = {game.grand:.4f}, {len(game.coalitions)} coalitions, "
      f"{game.estimator} {game.kind}, payout: {report.payout.policy}")

# %% [markdown]
# Every coalition's utility is in the report: rebuild the game and run any estimator on it,
# with stopping rules. A budget that buys every coalition (2³ = 8 here) is spent enumerating
# them, so the stratified estimate agrees with the exact values; below 2ⁿ it samples.

# %%
stored = report.game()
sampled = fairpool.estimate(stored, "stratified", stop=fairpool.MaxEvaluations(200), seed=0)
print(fairpool.to_dataframe(sampled).round(4).to_string())
largest_gap = max(abs(sampled.values[i] - game.values[p].value) for i, p in enumerate(sampled.players))
print(f"stratified vs exact: largest gap {largest_gap:.4f} after {stored.computed} stored coalitions read "
      f"(enumerated: {sampled.params.get('enumerated', False)})")

# %% [markdown]
# Calling `value` again with the same inputs resumes from the run's ledger: every adapter and
# the signed report are there, so Flower is not started and the report is the same.

# %%
again = fairpool.value(owners, eval=market.eval_path, out=workdir / "run", spec={"epochs": 1}, budget=1000,
                       progress=False)
print("resumed, same report:", again.raw == report.raw)
