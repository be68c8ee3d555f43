"""One tokenisation for training, scoring and decoding, checked against a stock TRL DPOTrainer.

The ids FairPool's coordinator scores must be, list for list, the ids TRL's ``DPOTrainer``
trains on: for a Llama-style tokenizer that adds a BOS token and for a chat-templated
tokenizer with conversational data. The stock trainer's dataset and collator are the oracle.
"""

from __future__ import annotations

import warnings

import pytest

from common.config.spec import TrainingSpec
from common.data import Message, PreferenceExample
from common.errors import ConfigError
from common.model.tokenization import require_chat_template, tokenize_pair, tokenize_prompt

MAX_LENGTH = 48

STANDARD_ROWS = [
    ("The river is", " quiet and clear.", " a loud mess."),
    ("Tell me about the garden:", " it has roses and a pond.", " no."),
    ("A kind teacher", " helps every student again.", " ignores them."),
    # long enough to be cut by max_length: truncation must agree too
    ("The old town market " * 3, " opens early every day of the week for everyone " * 3, " closes." * 2),
]

CHAT_ROWS = [
    ([Message("user", "What colour is the sky?")], [Message("assistant", "It is blue.")],
     [Message("assistant", "It is green.")]),
    ([Message("system", "Be brief."), Message("user", "Name a fruit.")], [Message("assistant", "An apple.")],
     [Message("assistant", "A chair, probably, or maybe a table.")]),
    ([Message("user", "Where is the station?")], [Message("assistant", "Two streets north, past the park.")],
     [Message("assistant", "I will not say.")]),
    # long enough to be cut by max_length
    ([Message("user", "Describe the old town market.")], [Message("assistant", "It opens early every day. " * 4)],
     [Message("assistant", "No.")]),
]


def _examples(rows):
    return [PreferenceExample(tuple(p) if isinstance(p, list) else p, tuple(c) if isinstance(c, list) else c,
                              tuple(r) if isinstance(r, list) else r) for p, c, r in rows]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from common.embedded.model_zoo import ZooModelConfig, build_zoo_model

    return build_zoo_model(tmp_path_factory.mktemp("llama"), ZooModelConfig(architecture="llama"))


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    from common.embedded.model_zoo import ZooModelConfig, build_zoo_model

    return build_zoo_model(tmp_path_factory.mktemp("qwen2"), ZooModelConfig(architecture="qwen2", chat_template=True))


def _stock_trainer(model_dir, examples, tmp_path, trainer_class=None):
    """A DPOTrainer as TRL ships it (or ``trainer_class``), on the plain base + a LoRA config."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, max_length=MAX_LENGTH, report_to="none",
                     per_device_train_batch_size=len(examples), activation_checkpointing=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (trainer_class or DPOTrainer)(
            model=model, args=args, processing_class=tokenizer,
            train_dataset=Dataset.from_list([e.as_dict() for e in examples]),
            peft_config=LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM")), tokenizer


def _assert_matches_trl(model_dir, rows, tmp_path):
    import torch

    from server.valuation.scoring import pair_sequences

    examples = _examples(rows)
    trainer, tokenizer = _stock_trainer(model_dir, examples, tmp_path)
    trl_rows = list(trainer.train_dataset)
    assert len(trl_rows) == len(examples)
    for example, trl_row in zip(examples, trl_rows):
        pair = tokenize_pair(tokenizer, example)
        assert list(pair.prompt_ids) == trl_row["prompt_ids"]
        assert list(pair.chosen_ids) == trl_row["chosen_ids"]
        assert list(pair.rejected_ids) == trl_row["rejected_ids"]

    # What the coordinator scores equals what TRL's collator feeds the model: ids and completion mask.
    batch = trainer.data_collator(trl_rows)
    chosen, rejected = pair_sequences(tokenizer, examples, MAX_LENGTH)
    n = len(examples)
    for i, (seq, start) in enumerate(chosen + rejected):
        width = int(batch["attention_mask"][i].sum())
        assert seq == batch["input_ids"][i][:width].tolist()
        mask = torch.zeros(width, dtype=torch.long)
        mask[start:] = 1
        assert mask.tolist() == batch["completion_mask"][i][:width].tolist()
    assert any(len(seq) == MAX_LENGTH for seq, _ in chosen[:n]), "a truncated pair is part of the check"
    return examples, tokenizer, trl_rows


def test_bos_tokenizer_scored_ids_equal_trl(llama_dir, tmp_path):
    examples, tokenizer, trl_rows = _assert_matches_trl(llama_dir, STANDARD_ROWS, tmp_path)
    assert tokenizer.bos_token_id is not None
    assert all(row["prompt_ids"][0] == tokenizer.bos_token_id for row in trl_rows)
    assert all(row["chosen_ids"][-1] == tokenizer.eos_token_id for row in trl_rows[:3])


def test_chat_template_scored_ids_equal_trl(chat_dir, tmp_path):
    examples, tokenizer, trl_rows = _assert_matches_trl(chat_dir, CHAT_ROWS, tmp_path)
    rendered = tokenizer.decode(trl_rows[0]["prompt_ids"])
    assert "<|im_start|>user" in rendered and rendered.rstrip().endswith("assistant")


def test_decoding_starts_from_the_trained_prompt_ids(llama_dir, chat_dir, tmp_path):
    from common.model.base import load_base_model
    from server.valuation.decoding import CoalitionDecoder

    for model_dir, rows in ((llama_dir, STANDARD_ROWS[:3]), (chat_dir, CHAT_ROWS)):
        examples = _examples(rows)
        trainer, tokenizer = _stock_trainer(model_dir, examples, tmp_path)
        from peft import LoraConfig, get_peft_model

        base, tok = load_base_model(model_dir)
        peft = get_peft_model(base, LoraConfig(r=4, task_type="CAUSAL_LM"), adapter_name="owner")
        decoder = CoalitionDecoder(peft, tok, ["owner"])
        encoded = decoder.encode([e.prompt for e in examples])
        for ids, row, example in zip(encoded, trainer.train_dataset, examples):
            assert ids == tokenize_prompt(tok, example.prompt)
            assert ids[: len(row["prompt_ids"])] == row["prompt_ids"]


def test_fairpool_trainer_trains_on_tokenize_pair_ids_with_prompt_limit(llama_dir, tmp_path):
    import functools

    from client.trainer import dpo_trainer_class

    examples = _examples(STANDARD_ROWS)
    trainer_class = functools.partial(dpo_trainer_class(), max_prompt_length=5)
    trainer, tokenizer = _stock_trainer(llama_dir, examples, tmp_path, trainer_class)
    for example, row in zip(examples, trainer.train_dataset):
        pair = tokenize_pair(tokenizer, example, max_prompt_length=5)
        assert row["prompt_ids"] == list(pair.prompt_ids)
        assert len(row["prompt_ids"]) <= 5
        full = tokenize_pair(tokenizer, example)
        assert row["prompt_ids"] == list(full.prompt_ids)[-5:], "the prompt keeps its last tokens"
        assert row["chosen_ids"] == list(full.chosen_ids)


def test_prompt_filling_max_length_is_dropped_and_counted(llama_dir):
    from transformers import AutoTokenizer

    from client.trainer import check_lengths

    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    examples = _examples(STANDARD_ROWS)
    lengths = check_lengths(examples, tokenizer, max_length=12)
    pairs = [tokenize_pair(tokenizer, e) for e in examples]
    assert lengths.prompt_too_long == sum(len(p.prompt_ids) >= 12 for p in pairs) >= 1
    assert lengths.truncated == sum(len(p.prompt_ids) < 12 and p.truncated(12) for p in pairs)
    assert len(lengths.kept) == len(examples) - lengths.prompt_too_long


def test_conversational_data_without_chat_template_is_one_clear_error(llama_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    assert not tokenizer.chat_template
    with pytest.raises(ConfigError) as info:
        require_chat_template(tokenizer, str(llama_dir), _examples(CHAT_ROWS[:1]))
    message = str(info.value)
    assert str(llama_dir) in message and "give one with `chat_template` (a Jinja template" in message
    require_chat_template(tokenizer, str(llama_dir), _examples(STANDARD_ROWS[:1]))  # strings need none


def test_spec_chat_template_is_installed_on_load(llama_dir):
    from common.embedded.model_zoo import CHATML_TEMPLATE
    from common.model.base import load_spec_model

    spec = TrainingSpec(base_model=str(llama_dir), chat_template=CHATML_TEMPLATE)
    _, tokenizer = load_spec_model(spec)
    assert tokenizer.chat_template == CHATML_TEMPLATE
    pair = tokenize_pair(tokenizer, _examples(CHAT_ROWS[:1])[0])
    assert "<|im_start|>" in tokenizer.decode(pair.prompt_ids)
