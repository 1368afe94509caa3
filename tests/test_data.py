import hashlib
from pathlib import Path

import pytest
import torch

from frosty_lm import corpus
from frosty_lm.config import FrostyError
from frosty_lm.data import CharDataModule, RandomWindows, fixed_windows


def datamodule(path: Path, **kwargs) -> CharDataModule:
    dm = CharDataModule(name="text", data_dir="unused", path=str(path), **{"block_size": 16, "batch_size": 4, **kwargs})
    dm.setup("fit")
    return dm


def test_contiguous_split_sizes(text_file):
    text = text_file.read_text()
    dm = datamodule(text_file, val_fraction=0.1)
    n_val = int(len(text) * 0.1)
    assert len(dm.val_data) == n_val and len(dm.train_data) == len(text) - n_val
    assert dm.tokenizer.decode(torch.cat((dm.train_data, dm.val_data))) == text  # contiguous, nothing lost


def test_training_windows_stay_inside_the_train_split(text_file):
    dm = datamodule(text_file)
    windows = RandomWindows(dm.train_data, 16, 64, seed=0)
    text = dm.tokenizer.decode(dm.train_data)
    for i in range(20):
        x, y = windows.batch(i)
        assert x.shape == y.shape == (64, 16)
        assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
        for row_x, row_y in zip(x[:4], y[:4]):
            assert dm.tokenizer.decode(torch.cat((row_x, row_y[-1:]))) in text


def test_training_stream_is_a_function_of_seed_and_batch_index():
    data = torch.arange(200) % 7
    a, b = RandomWindows(data, 8, 4, seed=1), RandomWindows(data, 8, 4, seed=1)
    other = RandomWindows(data, 8, 4, seed=2)
    assert torch.equal(a.batch(5)[0], b.batch(5)[0])
    assert not torch.equal(a.batch(5)[0], a.batch(6)[0])
    assert not torch.equal(a.batch(5)[0], other.batch(5)[0])
    resumed = RandomWindows(data, 8, 4, seed=1, start_batch=lambda: 3)
    assert torch.equal(next(iter(resumed))[0], a.batch(3)[0])  # resuming at batch 3 continues the same stream
    assert not torch.equal(RandomWindows(data, 8, 4, seed=1, rank=1).batch(5)[0], a.batch(5)[0])


@pytest.mark.parametrize("length", [33, 40, 48, 49])
def test_val_windows_predict_every_character_exactly_once(length):
    data = torch.arange(length)
    ds = fixed_windows(data, 16)
    x, y = ds.tensors
    counted = y[y != -1]
    assert sorted(counted.tolist()) == list(range(1, length))  # every target once, none twice
    for row_x, row_y in zip(x, y):  # each target follows its input
        keep = row_y != -1
        assert torch.equal(row_y[keep], row_x[keep] + 1)


def test_val_loader_covers_the_whole_split(text_file):
    dm = datamodule(text_file, batch_size=3)
    targets = sum(int((y != -1).sum()) for _, y in dm.val_dataloader())
    assert targets == len(dm.val_data) - 1


def test_block_size_longer_than_val_split_is_a_clear_error(text_file):
    with pytest.raises(FrostyError, match="val split .* fewer than model.block_size"):
        datamodule(text_file, block_size=2000, val_fraction=0.05)


def test_corpus_is_downloaded_once_and_verified(tmp_path):
    source = tmp_path / "remote.txt"
    source.write_text("the road not taken\n" * 50)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    data_dir = tmp_path / "data"
    path = corpus.resolve("poems", str(data_dir), url=source.as_uri(), sha256=digest)
    assert path == data_dir / "poems.txt" and path.read_bytes() == source.read_bytes()
    source.unlink()  # the second use reads the local copy
    assert corpus.resolve("poems", str(data_dir), url="file:///nonexistent", sha256=digest) == path


def test_download_with_wrong_sha256_is_not_kept(tmp_path):
    source = tmp_path / "remote.txt"
    source.write_text("some text\n")
    data_dir = tmp_path / "data"
    with pytest.raises(FrostyError, match="expected 0000"):
        corpus.resolve("poems", str(data_dir), url=source.as_uri(), sha256="0" * 64)
    assert not any(data_dir.iterdir())  # neither the file nor a partial download is left


def test_failed_download_says_how_to_get_the_file(tmp_path):
    with pytest.raises(FrostyError, match="FROSTY_DATA_DIR"):
        corpus.resolve("poems", str(tmp_path), url=(tmp_path / "missing.txt").as_uri(), sha256=None)


def test_a_val_split_with_fewer_windows_than_processes_is_refused(text_file):
    """A process without a val window would skip validation and leave the others waiting in its reduce."""
    from types import SimpleNamespace

    dm = datamodule(text_file, val_fraction=0.02)
    windows = len(dm.val_set)
    dm.trainer = SimpleNamespace(world_size=windows, global_rank=windows - 1)
    assert len(dm.val_dataloader().dataset) == 1  # one each
    dm.trainer = SimpleNamespace(world_size=windows + 1, global_rank=0)
    with pytest.raises(FrostyError, match=f"the val split has {windows} windows of model.block_size=16, fewer than "
                                          f"the run's {windows + 1} processes: raise data.val_fraction"):
        dm.val_dataloader()
