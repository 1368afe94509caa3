"""The corpus as a LightningDataModule: vocabulary, contiguous train/val split, batches of windows."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, Subset, TensorDataset

from frosty_lm import corpus
from frosty_lm.config import FrostyError
from frosty_lm.corpus import CharTokenizer
from frosty_lm.machine import check_fits


class RandomWindows(IterableDataset):
    """Batches of random windows of block_size + 1 characters, endlessly. Batch i depends only on (seed, rank, i) and
    iteration starts at start_batch(): a resumed run continues exactly the stream an uninterrupted one would have seen,
    with no sampler state to save. An "epoch" is as many batches as draw about as many characters as the split holds."""

    def __init__(self, data: torch.Tensor, block_size: int, batch_size: int, seed: int,
                 rank: int = 0, start_batch: Callable[[], int] = lambda: 0) -> None:
        self.data, self.block_size, self.batch_size = data, block_size, batch_size
        self.seed, self.rank, self.start_batch = seed, rank, start_batch
        self.offsets = torch.arange(block_size + 1)

    def __len__(self) -> int:
        return max(1, len(self.data) // (self.batch_size * self.block_size))

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(hash((self.seed, self.rank, i)) & 0x7FFF_FFFF_FFFF_FFFF)
        starts = torch.randint(len(self.data) - self.block_size, (self.batch_size,), generator=g)
        windows = self.data[starts[:, None] + self.offsets].long()  # (B, T + 1)
        return windows[:, :-1], windows[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        first = self.start_batch()
        for i in range(first, first + len(self)):
            yield self.batch(i)


def fixed_windows(data: torch.Tensor, block_size: int) -> TensorDataset:
    """Non-overlapping windows predicting each character after the first exactly once: window j maps data[jT : jT+T]
    to data[jT+1 : jT+T+1]; a last one over the final T + 1 characters masks its already-counted targets with -1."""
    T, n_targets = block_size, len(data) - 1
    full = n_targets // T
    x = data[: full * T].view(full, T).long()
    y = data[1 : full * T + 1].view(full, T).long()
    rest = n_targets - full * T
    if rest:
        tail = data[-(T + 1) :].long()
        tail_y = tail[1:].clone()
        tail_y[: T - rest] = -1
        x, y = torch.cat((x, tail[None, :-1])), torch.cat((y, tail_y[None]))
    return TensorDataset(x, y)


def windows(batch: tuple[torch.Tensor, torch.Tensor]) -> int:  # a batch's windows (ThroughputMonitor's samples)
    return batch[0].size(0)


def characters(batch: tuple[torch.Tensor, torch.Tensor]) -> int:  # characters trained on (ThroughputMonitor's items)
    return batch[0].numel()


class CharDataModule(L.LightningDataModule):
    def __init__(self, name: str, data_dir: str, block_size: int, batch_size: int = 32,
                 val_fraction: float = 0.1, seed: int = 0, path: str | None = None, url: str | None = None,
                 sha256: str | None = None, decode_errors: str = "strict") -> None:
        super().__init__()
        self.name, self.data_dir, self.path, self.url, self.sha256 = name, data_dir, path, url, sha256
        self.block_size, self.batch_size, self.val_fraction = block_size, batch_size, val_fraction
        self.seed, self.decode_errors = seed, decode_errors
        self.tokenizer: CharTokenizer | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is not None:
            return
        file = corpus.resolve(self.name, self.data_dir, self.path, self.url, self.sha256)  # downloaded on first use
        # read as bytes, decoded (up to 4 bytes a character), encoded to a byte a character: ~6x the file at the peak
        check_fits(6 * file.stat().st_size, f"reading the corpus {file}", "train on a smaller file")
        text = corpus.read_text(file, self.decode_errors)
        self.tokenizer = CharTokenizer.from_text(text)
        data = self.tokenizer.encode_tensor(text)
        self.text_sha256 = hashlib.sha256(data.numpy()).hexdigest()  # the text, given its vocabulary
        n_val = int(len(data) * self.val_fraction)
        self.train_data, self.val_data = data[: len(data) - n_val], data[len(data) - n_val :]
        for split, part in (("train", self.train_data), ("val", self.val_data)):
            if len(part) < self.block_size + 1:
                raise FrostyError(
                    f"the {split} split of {file} has {len(part)} characters, fewer than "
                    f"model.block_size + 1 = {self.block_size + 1}: lower model.block_size"
                    + (" or raise data.val_fraction" if split == "val"
                       else ", lower data.val_fraction or use a longer corpus")
                )
        self.val_set = fixed_windows(self.val_data, self.block_size)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank = trainer.global_rank if trainer else 0
        accumulate = trainer.accumulate_grad_batches if trainer else 1
        start = (lambda: trainer.global_step * accumulate) if trainer else (lambda: 0)
        windows = RandomWindows(self.train_data, self.block_size, self.batch_size, self.seed, rank, start)
        # the dataset yields whole batches; a private generator keeps the loader off the global RNG (dropout's)
        return DataLoader(windows, batch_size=None, generator=torch.Generator())

    def val_dataloader(self) -> DataLoader:
        """Every val window once in all: with several processes, each evaluates every world_size-th window
        (no padding, unlike a DistributedSampler), and the loss totals are summed across processes."""
        val_set, world_size = self.val_set, self.trainer.world_size if self.trainer is not None else 1
        if len(val_set) < world_size:  # a process without a window would skip validation and leave the others waiting
            raise FrostyError(f"the val split has {len(val_set)} windows of model.block_size={self.block_size}, fewer "
                              f"than the run's {world_size} processes: raise data.val_fraction or lower "
                              "model.block_size")
        if world_size > 1:
            val_set = Subset(val_set, range(self.trainer.global_rank, len(val_set), world_size))
        return DataLoader(val_set, batch_size=self.batch_size, shuffle=False, generator=torch.Generator())
