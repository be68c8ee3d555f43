"""Shared fixtures: a hermetic FairPool home, the embedded base model, small markets.

``FAIRPOOL_HOME`` defaults to ``.pytest-fairpool-home`` in the checkout so repeated local runs
reuse the (deterministic) base-model build; CI's fresh clone builds it once per run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("FAIRPOOL_HOME", str(ROOT / ".pytest-fairpool-home"))
for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                   "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The embedded base model, built once (cached under FAIRPOOL_HOME)."""
    from common.embedded.base_model import build_base_model

    return build_base_model()


@pytest.fixture(scope="session")
def default_market(tmp_path_factory):
    """The default embedded market (seed 0), written once per session."""
    from common.embedded.market import make_market

    return make_market(tmp_path_factory.mktemp("market"), seed=0)


@pytest.fixture(scope="session")
def fast_spec(base_model_dir):
    """A spec that trains in about a second: for tests of plumbing, not of value quality."""
    from common.embedded.default_job import spec_for

    return spec_for(str(base_model_dir), epochs=1.0)


@pytest.fixture(scope="session")
def quick_adapters(fast_spec, default_market):
    """Adapters of three owners trained on 48 examples each (seconds, not minutes)."""
    from client.trainer import train_adapter
    from common.data import load_preferences

    adapters = {}
    for name in ("clean", "clean-small", "flipped"):
        examples, _ = load_preferences(default_market.owners[name])
        adapters[name] = train_adapter(fast_spec, examples[:48])
    return adapters


@pytest.fixture
def no_failpoints(monkeypatch):
    """No failpoint armed before or left armed after the test (``common.trust.faults``)."""
    from common.trust import faults

    monkeypatch.delenv(faults.ENV, raising=False)
    faults.reset()
    yield
    faults.reset()


def pytest_collection_modifyitems(config, items):
    """The Flower runs (marked ``slow``) first, in their own order: with two pytest-xdist workers
    the longest tests then start at once and the short ones fill in around them, instead of one
    long test running alone at the end while the other worker idles."""
    def rank(item) -> tuple[bool, bool]:  # the kill/resume runs of test_end_to_end are the longest
        return item.get_closest_marker("slow") is None, "test_end_to_end" not in item.nodeid

    items.sort(key=rank)
