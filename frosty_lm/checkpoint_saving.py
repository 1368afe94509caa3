"""How a training run writes its checkpoints: atomically (AtomicCheckpointIO), and which it keeps (best.ckpt and
last.ckpt: BestAndLastCheckpoint). Reading them is checkpoint.py's."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from frosty_lm.checkpoint import read_safely, same_file
from frosty_lm.errors import NonFiniteLoss, Stopped

UMASK = os.umask(0o022)
os.umask(UMASK)  # (reading the umask means setting it: set back at once)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, made safe: a checkpoint is written to a temporary file beside its target,
    flushed to disk and renamed over it, so a kill at any moment leaves either the old file or the new one;
    loading goes through read_safely (weights_only, and a clear error for a bad file).

    loaded: a checkpoint already read, with its path (the run's start, which train.py reads first to check
    it): when Lightning asks for that path, it gets this dict, once, and the file is not read again."""

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
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            os.chmod(tmp, 0o666 & ~UMASK)  # as the run's other files (mkstemp makes it private)
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except Exception as err:  # the line names the checkpoint, whatever layer met the full or read-only disk
            cause = err
            while cause is not None and not (isinstance(cause, OSError) and cause.errno):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise OSError(cause.errno, cause.strerror, str(target)) from err
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        loaded = self._loaded.pop(same_file(path), None)  # handed over once: a later load reads the file
        # read_safely also reads Lightning's own files, e.g. ddp_spawn's weights handed back
        return loaded if loaded is not None else read_safely(path)


class BestAndLastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (the top-k by the monitored metric: best.ckpt), with last.ckpt always the last
    state: written after every validation and when training ends (finished, stopped by a signal or by max_time),
    whatever the monitored metric did. (Lightning's save_last writes last.ckpt at a validation only when a top-k
    checkpoint was saved then, i.e. when the metric improved: this class writes it instead, with
    trainer.save_checkpoint.) At a NaN stop last.ckpt is the state at the stop, before the step whose loss was not
    finite, if its weights are finite and training runs in one process; otherwise (the step before made them NaN,
    or other processes would wait on this one) it keeps the last validation's state. Nothing is written when
    training fails otherwise. The state is kept in checkpoints under ModelCheckpoint's key, so runs checkpointed
    by ModelCheckpoint resume with their best score."""

    def __init__(self, save_last: bool | None = None, **kwargs) -> None:
        super().__init__(save_last=False, **kwargs)
        self.keep_last = bool(save_last)
        self.last_step: int | None = None  # the global step of the last last.ckpt this process wrote

    @property
    def state_key(self) -> str:
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)

    def load_state_dict(self, state_dict: dict) -> None:
        """A run directory that was moved or copied (received from someone else) keeps its best score and goes on
        writing its own best.ckpt and last.ckpt (Lightning would forget the score, once the directory differs, and
        fork best-v1.ckpt, last-v1.ckpt). A new run started from another run's checkpoint (ckpt_path=) starts
        its own best."""
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
        stopped = isinstance(exception, (Stopped, SIGTERMException))  # at a step boundary (or in a validation)
        if stopped or (isinstance(exception, NonFiniteLoss) and trainer.world_size == 1
                       and all(torch.isfinite(p).all() for p in pl_module.parameters())):
            self.write_last(trainer)

    def write_last(self, trainer) -> None:
        """last.ckpt, unless this step's is written already (or no step was trained)."""
        if (not self.keep_last or trainer.fast_dev_run or trainer.sanity_checking or trainer.global_step == 0
                or trainer.state.fn != TrainerFn.FITTING or self.last_step == trainer.global_step):
            return
        self.last_model_path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)  # set first: saved in it
        trainer.save_checkpoint(self.last_model_path, self.save_weights_only)
        self.last_step = trainer.global_step
