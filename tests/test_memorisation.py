"""sample/copied: the share of a sample's windows found verbatim in the training split, exact."""
import numpy as np
import pytest
import torch

from frosty_lm import corpus
from frosty_lm.callbacks import CopiedShare
from frosty_lm.config import GPTConfig
from frosty_lm.corpus import WindowIndex
from frosty_lm.model import GPT


def brute_force(text: np.ndarray, query: np.ndarray, window: int) -> np.ndarray:
    windows = {text[i : i + window].tobytes() for i in range(len(text) - window + 1)}
    return np.array([query[i : i + window].tobytes() in windows for i in range(len(query) - window + 1)], dtype=bool)


@pytest.mark.parametrize("window", [1, 4, 32])
def test_the_index_finds_exactly_the_windows_of_the_text(window):
    rng = np.random.default_rng(0)
    text = rng.integers(0, 5, size=3000).astype(np.uint8)  # 5 characters: short windows recur, long ones rarely
    query = np.concatenate([text[100:180], rng.integers(0, 5, size=80).astype(np.uint8), text[2900:]])
    found = WindowIndex(text, window).contains(query)
    assert np.array_equal(found, brute_force(text, query, window))
    assert found[: 80 - window + 1].all()  # a copied stretch is found window by window


def test_a_hash_collision_is_never_a_false_hit(monkeypatch):
    monkeypatch.setattr(corpus, "window_hashes", lambda ids, window: np.zeros(max(0, len(ids) - window + 1),
                                                                                   dtype=np.uint64))
    text = np.frombuffer(b"the woods are lovely, dark and deep", dtype=np.uint8)
    query = np.frombuffer(b"dark and deep, and miles", dtype=np.uint8)
    found = WindowIndex(text, 8).contains(query)  # every hash collides: only comparisons decide
    assert np.array_equal(found, brute_force(text, query, 8)) and 0 < found.sum() < len(found)


def test_the_share_of_copied_windows_and_a_sample_shorter_than_a_window():
    text = np.frombuffer(b"abcdefgh" * 4, dtype=np.uint8)
    index = WindowIndex(text, 4)
    assert index.copied_share(np.frombuffer(b"abcdxxxx", dtype=np.uint8)) == pytest.approx(1 / 5)
    assert index.copied_share(np.frombuffer(b"abc", dtype=np.uint8)) is None


def test_the_callback_measures_a_fixed_seeded_sample():
    vocab = "\n abcdefgh"
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocab), block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
    callback = CopiedShare(window=3, chars=200)
    text = np.random.default_rng(1).integers(0, len(vocab), size=5000).astype(np.uint8)
    callback.index = WindowIndex(text, 3)  # nearly every 3-window of 10 characters occurs in 5,000 random ones
    share = callback.measure(model, vocab)
    assert share == callback.measure(model, vocab) and 0.8 < share <= 1.0  # the same sample each time
    callback.index = WindowIndex(np.zeros(100, dtype=np.uint8), 3)  # only "\n\n\n"
    assert callback.measure(model, vocab) < 0.2


@pytest.mark.parametrize("setting, message", [
    ({"window": 0}, r"callbacks.copied.window=0 must be a positive integer"),
    ({"chars": "many"}, r"callbacks.copied.chars='many' must be a positive integer"),
    ({"temperature": -1.0}, r"callbacks.copied.temperature=-1.0 must be a number >= 0"),
    ({"temperature": float("nan")}, r"callbacks.copied.temperature=nan must be a number >= 0"),
    ({"seed": "abc"}, r"callbacks.copied.seed='abc' must be an integer in \[0, 2\*\*32\)"),
    ({"seed": 2**70}, r"callbacks.copied.seed=1180591620717411303424 must be an integer in"),
])
def test_bad_settings_are_one_line(setting, message):
    from frosty_lm.config import FrostyError

    with pytest.raises(FrostyError, match=message):
        CopiedShare(**setting)


@pytest.mark.parametrize("window", [1, 2, 3, 5, 8, 13, 32, 33])
def test_window_hashes_by_doubling_are_the_polynomial_hash(window):
    ids = np.random.default_rng(window).integers(0, 97, size=300).astype(np.uint8)
    base = int(corpus.BASE)
    expected = [sum(int(ids[i + j]) * pow(base, window - 1 - j, 2**64) for j in range(window)) % 2**64
                for i in range(len(ids) - window + 1)]
    assert corpus.window_hashes(ids, window).tolist() == expected


def test_an_index_that_would_not_fit_in_memory_is_refused_with_the_fix(monkeypatch):
    from types import SimpleNamespace

    import frosty_lm.machine as machine
    from frosty_lm.config import FrostyError

    data = torch.zeros(1000, dtype=torch.uint8)
    trainer = SimpleNamespace(is_global_zero=True, datamodule=SimpleNamespace(train_data=data))
    monkeypatch.setattr(machine, "available_memory", lambda: 10 * len(data))  # less than the index's peak
    with pytest.raises(FrostyError, match="indexing the 1,000 training characters for sample/copied needs about .* "
                                          "turn sample/copied off with callbacks.copied=null"):
        CopiedShare().on_train_start(trainer, None)
    monkeypatch.setattr(machine, "available_memory", lambda: 100 * len(data))
    CopiedShare().on_train_start(trainer, None)
