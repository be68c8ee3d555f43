"""docs/examples/chat_example.py builds README's conversational example world, offline: the
data are conversational TRL files, and the adapter that plain TRL trained is accepted as it is."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_chat_example_world_is_what_the_readme_values(tmp_path):
    from common.data import load_preferences
    from common.embedded.default_job import spec_for
    from common.model.adapter_files import check_adapter_dirs

    runpy.run_path(str(ROOT / "docs" / "examples" / "chat_example.py"), run_name="example")["main"](str(tmp_path))
    for name, count in (("acme", 96), ("globex", 96), ("hooli", 96), ("heldout", 60)):
        examples, _ = load_preferences(tmp_path / "data" / f"{name}.jsonl")
        assert len(examples) == count and all(e.conversational for e in examples)
    model = tmp_path / "models" / "my-chat-lm"
    spec = spec_for(str(model))  # the default LoRA setup that `fairpool value` checks the adapter against
    checked = check_adapter_dirs({"initech": str(tmp_path / "adapters" / "initech")}, str(model), spec)
    assert set(checked) == {"initech"} and checked["initech"].tensors
