"""The LoRA adapter as both sides see it: config from the spec, tensors in and out of PEFT.

Owners and coordinator must build the *same* ``LoraConfig`` from a spec, or adapters trained
by one would not load on the other; hence one function here rather than one per side.
Adapter tensors travel as float32 numpy arrays keyed by PEFT's adapter-free names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from common.config.spec import TrainingSpec


def _uses_conv1d(model, target_modules: list[str] | None) -> bool:
    """GPT-2 style models store linear layers as ``Conv1D`` (transposed): LoRA must know."""
    from transformers.pytorch_utils import Conv1D

    for name, module in model.named_modules():
        if isinstance(module, Conv1D) and (target_modules is None or name.split(".")[-1] in target_modules):
            return True
    return False


def lora_config(spec: TrainingSpec, model):
    """The PEFT ``LoraConfig`` for ``spec`` on ``model``'s architecture."""
    from peft import LoraConfig
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    targets = [t.strip() for t in spec.target_modules.split(",") if t.strip()] or None
    resolved = targets or DEFAULTS.get(getattr(model.config, "model_type", ""), None)
    return LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=targets,
        fan_in_fan_out=_uses_conv1d(model, list(resolved) if resolved else None),
        bias="none",
        task_type="CAUSAL_LM",
    )


def adapter_tensors(peft_model, adapter_name: str = "default") -> dict[str, np.ndarray]:
    """The adapter's weights as float32 numpy arrays (Flower arrays cannot carry bfloat16)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
    return {k: v.detach().to("cpu").float().numpy().copy() for k, v in state.items()}


def expected_adapter_shapes(spec: TrainingSpec, base_model) -> dict[str, tuple[int, ...]]:
    """Names and shapes a valid adapter for ``spec`` on ``base_model`` must have.

    Built by wrapping a deep copy of the base, so the caller's model is left untouched.
    """
    import copy

    from peft import get_peft_model

    probe = get_peft_model(copy.deepcopy(base_model), lora_config(spec, base_model))
    return {k: tuple(v.shape) for k, v in adapter_tensors(probe).items()}


def load_adapters(base_model, spec: TrainingSpec, adapters: Mapping[str, Mapping[str, np.ndarray]]):
    """Wrap ``base_model`` in one ``PeftModel`` holding every owner's adapter by name."""
    import torch
    from peft import get_peft_model, set_peft_model_state_dict

    names = list(adapters)
    config = lora_config(spec, base_model)
    model = get_peft_model(base_model, config, adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, config)
    for name in names:
        state = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in adapters[name].items()}
        result = set_peft_model_state_dict(model, state, adapter_name=name)
        unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
        if unexpected:
            raise ValueError(f"adapter {name}: unexpected tensors {unexpected[:3]}")
    model.eval()
    return model


def merge_chain(base_model, spec: TrainingSpec, chain: Sequence[Mapping[str, np.ndarray]]):
    """``base_model`` with each adapter of ``chain`` merged into its weights, in order: the model
    after the stages of a sequential DPO chain (method.md §5).

    Why merge one at a time: stage k's adapter was trained on the model with stages 1..k−1
    already merged (its reference), so only this order rebuilds that model; an owner training
    the next stage and the coordinator scoring the chain both rebuild it here, identically.
    """
    model = base_model
    for tensors in chain:
        model = load_adapters(model, spec, {"stage": tensors}).merge_and_unload()
    model.eval()
    return model
