"""Is the model copying its training text? sample/copied: the share of a fixed, seeded sample's windows of `window`
characters that occur verbatim in the training split. The split's windows are indexed once per run by a 64-bit
polynomial hash, sorted; a hash found is checked against the text there, so the share is exact (a collision costs
a comparison, never a false hit).
"""
import numpy as np

from frosty_lm.callbacks import EveryNValidations
from frosty_lm.corpus import CharTokenizer
from frosty_lm.errors import FrostyError
from frosty_lm.generation import default_prompt, sample_text

BASE = np.uint64(1_000_003)  # odd, larger than any character id


def window_hashes(ids: np.ndarray, window: int) -> np.ndarray:
    """The hash of every window of `window` ids: sum of id * BASE**(places after it), modulo 2**64. Built by
    doubling (windows of 2k from two of k) and adding up the powers of two in `window`: a few passes, not `window`."""
    if len(ids) < window:
        return np.empty(0, dtype=np.uint64)
    piece, length = ids.astype(np.uint64), 1  # the hashes of windows of `length` ids
    result, done = None, 0  # the hashes of windows of `done` ids (the powers of two of window taken so far)
    with np.errstate(over="ignore"):  # wrapping around 2**64 is the hash's modulus
        while True:
            if window & length:
                result = piece if result is None else _join(result, done, piece, length)
                done += length
            if done == window:
                return result
            piece = _join(piece, length, piece, length)
            length *= 2


def _join(left: np.ndarray, left_length: int, right: np.ndarray, right_length: int) -> np.ndarray:
    """Hashes of windows of left_length + right_length ids, from those of each part (at every start)."""
    n = len(left) - right_length  # windows of the joined length
    shift = np.uint64(pow(int(BASE), right_length, 2**64))
    return left[:n] * shift + right[left_length : left_length + n]


class WindowIndex:
    """Every window of `window` characters of a text (as ids), for exact membership queries."""

    def __init__(self, ids: np.ndarray, window: int) -> None:
        self.ids, self.window = np.ascontiguousarray(ids), window
        hashes = window_hashes(self.ids, window)
        self.order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[self.order]

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """For each window of ids, whether it occurs in the indexed text."""
        queries = window_hashes(np.asarray(ids), self.window)
        found = np.zeros(len(queries), dtype=bool)
        lo = np.searchsorted(self.hashes, queries, side="left")
        hi = np.searchsorted(self.hashes, queries, side="right")
        for i in np.nonzero(hi > lo)[0]:
            query = ids[i : i + self.window]
            found[i] = any(np.array_equal(self.ids[p : p + self.window], query) for p in self.order[lo[i] : hi[i]])
        return found

    def copied_share(self, ids: np.ndarray) -> float | None:
        """The share of the windows of ids found in the indexed text; None if ids has no whole window."""
        found = self.contains(ids)
        return float(found.mean()) if len(found) else None


class CopiedShare(EveryNValidations):
    """Logs sample/copied every few validations, for a sample from `prompt` (left out of the windows)."""

    name = "copied"

    def __init__(self, window: int = 32, chars: int = 1000, prompt: str = "\n", temperature: float = 0.8,
                 seed: int = 0, every_n_validations: int = 4) -> None:
        if not isinstance(window, int) or window < 1 or not isinstance(chars, int) or chars < 1:
            raise FrostyError(f"callbacks.copied: window={window!r} and chars={chars!r} must be positive integers")
        super().__init__(every_n_validations)
        self.window, self.chars, self.prompt, self.temperature, self.seed = window, chars, prompt, temperature, seed
        self.index: WindowIndex | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and hasattr(trainer.datamodule, "train_data"):
            self.index = WindowIndex(trainer.datamodule.train_data.numpy(), self.window)

    def at_validation(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or self.index is None or not trainer.loggers:
            return
        share = self.measure(pl_module.model, pl_module.hparams.vocab)
        if share is not None:
            for logger in trainer.loggers:
                logger.log_metrics({"sample/copied": share}, step=trainer.global_step)

    def measure(self, model, vocab: str) -> float | None:
        prompt = "".join(ch for ch in self.prompt if ch in vocab) or default_prompt(vocab)
        text = sample_text(model, vocab, prompt, self.chars, self.temperature, seed=self.seed)[len(prompt):]
        return self.index.copied_share(np.asarray(CharTokenizer(vocab).encode(text), dtype=np.int64))
