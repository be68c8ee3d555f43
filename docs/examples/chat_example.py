"""Builds the world of README's "A conversational dataset, your own model, and an adapter an
owner already has" example, so its figures can be regenerated on any machine (offline).

    .venv/bin/python docs/examples/chat_example.py WORKDIR
    cd WORKDIR && ../.venv/bin/fairpool value --base-model models/my-chat-lm \\
        --owner acme=data/acme.jsonl --owner globex=data/globex.jsonl --owner hooli=data/hooli.jsonl \\
        --adapter initech=adapters/initech --adapter-examples initech=64 \\
        --eval data/heldout.jsonl --out runs/chat

- ``models/my-chat-lm``: a locally built, randomly initialised Qwen2-architecture model whose
  tokenizer has a ChatML chat template (it stands in for a real chat model).
- ``data/*.jsonl``: TRL's conversational preference layout (``prompt`` a list of messages,
  ``chosen``/``rejected`` one assistant message each), 96 pairs per owner from the embedded
  market: ``acme`` correct labels, ``globex`` 40% flipped, ``hooli`` all flipped; 60 held out.
- ``adapters/initech``: a LoRA adapter trained by plain TRL (``DPOTrainer`` + ``peft_config``,
  not FairPool's trainer) on 64 other correct pairs and saved with ``save_pretrained``, as an
  owner with its own training script would have it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def conversational(example) -> dict:
    return {"prompt": [{"role": "user", "content": example.prompt}],
            "chosen": [{"role": "assistant", "content": example.chosen}],
            "rejected": [{"role": "assistant", "content": example.rejected}]}


def write_jsonl(rows, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def main(workdir: str) -> None:
    from common.data import load_preferences
    from common.embedded.market import OwnerProfile, make_market
    from common.embedded.model_zoo import ZooModelConfig, build_zoo_model

    root = Path(workdir).resolve()
    model = build_zoo_model(root / "models" / "my-chat-lm", ZooModelConfig(architecture="qwen2", chat_template=True))
    profiles = (OwnerProfile("acme", 96, 0.0), OwnerProfile("globex", 96, 0.4), OwnerProfile("hooli", 96, 1.0),
                OwnerProfile("initech", 64, 0.0))
    market = make_market(root / "market", seed=3, profiles=profiles, eval_size=60)
    for name in ("acme", "globex", "hooli"):
        write_jsonl([conversational(e) for e in load_preferences(market.owners[name])[0]],
                    root / "data" / f"{name}.jsonl")
    write_jsonl([conversational(e) for e in load_preferences(market.eval_path)[0]], root / "data" / "heldout.jsonl")
    train_with_plain_trl(model, [conversational(e) for e in load_preferences(market.owners["initech"])[0]],
                         root / "adapters" / "initech")
    print(f"wrote {root}/models, {root}/data and {root}/adapters")


def train_with_plain_trl(model_dir: Path, rows: list[dict], out: Path) -> None:
    """What an owner's own script does: TRL's DPOTrainer with a PEFT LoRA config, then save."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = DPOConfig(output_dir=str(out.parent / ".initech-run"), learning_rate=5e-3, num_train_epochs=6,
                     per_device_train_batch_size=16, beta=0.1, max_length=96, report_to="none",
                     save_strategy="no", use_cpu=True, bf16=False, activation_checkpointing=False, seed=7)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM"))
    trainer.train()
    trainer.model.save_pretrained(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "chat-example")
