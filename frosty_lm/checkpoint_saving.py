"""How a training run writes its checkpoints: atomically (AtomicCheckpointIO), and which it keeps (best.ckpt and
last.ckpt: BestAndLastCheckpoint). Reading them is checkpoint.py's."""
from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from frosty_lm.callbacks import Stopped
from frosty_lm.checkpoint import read_safely, same_file
from frosty_lm.cli import replace_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, made safe: written to a temporary file beside the target, flushed to disk and
    renamed over it (a kill leaves the old file or the new one); read through read_safely. loaded: (path, dict) of a
    checkpoint train.py has read already: Lightning gets that dict, once, instead of reading the file again."""

    def __init__(self, loaded: tuple[str | Path, dict] | None = None) -> None:
        super().__init__()
        self._loaded = {same_file(loaded[0]): loaded[1]} if loaded else {}
        self._cleaned: set[Path] = set()

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent not in self._cleaned:  # a write killed earlier left its temporary file: remove it
            for stale in target.parent.glob(".*.ckpt.*.tmp"):
                stale.unlink(missing_ok=True)
            self._cleaned.add(target.parent)
        try:
            replace_file(target, lambda f: torch.save(checkpoint, f))
        except Exception as err:  # the line names the checkpoint, whatever layer met the full or read-only disk
            cause = err
            while cause is not None and not (isinstance(cause, OSError) and cause.errno):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise OSError(cause.errno, cause.strerror, str(target)) from err

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        loaded = self._loaded.pop(same_file(path), None)  # handed over once: a later load reads the file
        return loaded if loaded is not None else read_safely(path)  # (also Lightning's own files: ddp_spawn's)


class BestAndLastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint for best.ckpt; with save_last (as conf/callbacks/ sets it), last.ckpt is always the last state,
    written after every validation and when training ends or is stopped (Lightning's writes it only on improvement).
    At a NaN stop it stays the last validation's: the state at the stop would give NaN again."""

    def __init__(self, save_last: bool | None = None, **kwargs) -> None:
        super().__init__(save_last=False, **kwargs)
        self.keep_last = bool(save_last)
        self.last_step: int | None = None  # the global step of the last last.ckpt this process wrote

    @property
    def state_key(self) -> str:  # ModelCheckpoint's, so runs it checkpointed resume with their score
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)

    def load_state_dict(self, state_dict: dict) -> None:
        """A moved or copied run directory keeps its best score, best.ckpt and last.ckpt (Lightning would forget the
        score and fork best-v1.ckpt, last-v1.ckpt); a new run from a checkpoint (ckpt_path=) starts its own best."""
        old, new = state_dict.get("dirpath"), self.dirpath
        best = state_dict.get("best_model_path") or ""
        if old and new and old != new and best and (Path(new) / Path(best).name).is_file():
            def moved(path):
                return str(Path(new) / Path(path).name) if path else path

            state_dict = {**state_dict, "dirpath": new, "best_model_path": moved(best),
                          "kth_best_model_path": moved(state_dict.get("kth_best_model_path")),
                          "last_model_path": moved(state_dict.get("last_model_path")),
                          "best_k_models": {moved(k): v for k, v in (state_dict.get("best_k_models") or {}).items()}}
        super().load_state_dict(state_dict)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)  # best.ckpt, if the metric improved
        self.write_last(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.write_last(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (Stopped, SIGTERMException)):  # at a step boundary (or in a validation)
            self.write_last(trainer)

    def write_last(self, trainer) -> None:
        """last.ckpt, unless this step's is written already (or no step was trained)."""
        if (not self.keep_last or trainer.fast_dev_run or trainer.sanity_checking or trainer.global_step == 0
                or trainer.state.fn != TrainerFn.FITTING or self.last_step == trainer.global_step):
            return
        self.last_model_path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)  # set first: saved in it
        trainer.save_checkpoint(self.last_model_path, self.save_weights_only)
        self.last_step = trainer.global_step
