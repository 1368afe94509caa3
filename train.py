"""Train a character GPT: `python train.py model=small dataset=frost` (see conf/train.yaml). Checks the config,
then fits (torch and Lightning are imported only then: they take seconds) and summarises the run."""
from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from frosty_lm import cli, corpus
from frosty_lm.cli import command_arg, exit_on_user_error, in_sweep, job_log_only, make, parallel_jobs, user_message
from frosty_lm.config import FrostyError, GPTConfig, check_config, is_int
from frosty_lm.run_dirs import LAST, resume_if_asked
from frosty_lm.status import RunLock, RunRecord, summarise

log = logging.getLogger("frosty")


def check_early(cfg: DictConfig) -> None:
    """train.py's checks before torch and Lightning load: the config, and that the corpus file is there. A resume's
    config is checked once composed; with ckpt_path, training reads the checkpoint first, and reports that first."""
    if cfg.get("resume"):
        return
    check_config(cfg)
    if not cfg.get("ckpt_path"):
        data = cfg.data
        file = corpus.locate(data.name, data.data_dir, data.get("path"), data.get("url"))
        if file.exists():  # else it is downloaded when training starts
            corpus.check_regular_file(file)


@hydra.main(version_base="1.3", config_path=str(Path(__file__).parent / "conf"), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    if not in_sweep():  # a sweep's job: run_training checks the config, and records a failure in its status.json
        check_early(cfg)  # a bad config or a missing corpus: one line at once, before torch and Lightning load
    return run_training(cfg)


def run_training(cfg: DictConfig) -> float | None:
    """Train, checkpoint, summarise; returns the best val loss (what sweeps minimise), status.json following the run.
    Ctrl-C or SIGTERM save last.ckpt, print the command that continues the run and exit 130 or 143; a sweep's job
    returns None instead, and the sweep goes on."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from frosty_lm.callbacks import StopOnInterrupt, Stopped
    from frosty_lm.progress import keep_off_console, quiet_lightning

    quiet_lightning()  # once Lightning is imported: it adds its console handler then
    keep_off_console(f"[job {HydraConfig.get().job.num}] " if parallel_jobs() > 1 else "")  # its directory: N_...
    resumed = bool(cfg.get("resume"))
    try:
        cfg, start, overrides = resume_if_asked(cfg)
        lock = RunLock(cfg.paths.output_dir)
        lock.acquire()  # before anything of the run is written: a second trainer of it is refused
        record = RunRecord(cfg.paths.output_dir, resumed=resumed)  # (written whole or not at all)
        record.start(overrides, command=list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [])
    except BaseException:
        if resumed:
            forget_refused_resume()
        raise
    try:
        best = fit(cfg, record, start, overrides)
    except (Stopped, SIGTERMException) as stop:
        signum = stop.signum if isinstance(stop, Stopped) else signal.SIGTERM
        how, steps = "" if signum == signal.SIGINT else " by SIGTERM", record.data.get("steps", 0)
        saved = (Path(cfg.paths.output_dir) / LAST).is_file()  # (not with callbacks.model_checkpoint.save_last=false)
        if steps >= cfg.trainer.max_steps:  # (SIGTERM in the final validation) every step trained
            record.write(status="finished")
            log.info("stopped%s in the final validation at step %d: the run is trained%s", how, steps,
                     "; last.ckpt saved" * saved)
        else:
            record.write(status="interrupted", error=f"stopped by {signal.Signals(signum).name}", training_started=True)
            log.info("interrupted%s at step %d; %s", how, steps, f"last.ckpt saved; continue with: python train.py "
                     f"{command_arg('resume', Path(cfg.paths.output_dir))}" if saved else f"no {LAST} to continue from")
        if in_sweep() and (signum == signal.SIGINT or parallel_jobs() > 1):  # the sweep goes on (a parallel
            return None  # sweep's main process ends it on SIGTERM); jobs in this process: SIGTERM ends the sweep
        # a Ctrl-C more while the process exits (its atexit hooks: TensorBoard's writer) exits at once
        atexit.register(signal.signal, signal.SIGINT, StopOnInterrupt.exit_now)
        sys.exit(128 + signum)
    except BaseException as err:
        if record.previous is not None and not record.training_started:
            record.restore()  # a refused resume leaves the run's record as it was
            forget_refused_resume()
        elif isinstance(err, KeyboardInterrupt):
            record.write(status="interrupted", error="stopped by SIGINT before the first step",
                         training_started=record.training_started)
        else:  # the error as its line says it; steps and best val loss as the checkpoints kept them
            line = user_message(err) or (str(err) or type(err).__name__).splitlines()[0]
            record.write(status="failed", error=line, training_started=record.training_started,
                         **(record.checkpointed() if record.training_started else {}))
        raise
    finally:
        lock.release()
    return best


def fit(cfg: DictConfig, record: RunRecord, start: dict | None = None, overrides: list[str] | None = None) -> float:
    """The run itself; returns the best val loss. Ctrl-C or SIGTERM raise Stopped or SIGTERMException out of it.
    start: the checkpoint resume= has read; Lightning is handed what was read, so the file is read once. overrides:
    those that composed cfg, for the checkpoints (resume= composes conf/ with them again)."""
    import lightning as L
    import torch
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.callbacks import ProgressBar
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from torch.multiprocessing import ProcessRaisedException

    from frosty_lm.callbacks import StopOnInterrupt, Stopped
    from frosty_lm.checkpoint import check_compatible, check_more_to_train, check_start_state, load_checkpoint
    from frosty_lm.checkpoint_saving import AtomicCheckpointIO
    from frosty_lm.data import CharDataModule
    from frosty_lm.lit_module import FrostyLM, NonFiniteLoss
    from frosty_lm.machine import FILE_ERRORS, check_gpu_present, check_training_fits, precision_line
    from frosty_lm.progress import ProgressLines

    check_config(cfg)  # before threads and seed reach torch
    check_gpu_present(cfg.trainer.get("accelerator"))  # before the corpus is read
    devices = cfg.trainer.get("devices")
    devices = devices if cfg.trainer.get("accelerator") == "cpu" and is_int(devices) and devices > 0 else 1
    threads = cfg.get("threads")
    if threads is None and parallel_jobs() * devices > 1:  # a parallel sweep's job, a process of several: its share
        threads = max(1, (os.cpu_count() or 1) // (parallel_jobs() * devices))  # of the cores
    if threads:
        torch.set_num_threads(int(threads))
    threads = torch.get_num_threads()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    resumed_run = start is not None
    if start is None and cfg.ckpt_path:  # a clear error now, before the corpus is read, for a missing or unsafe file
        start = load_checkpoint(cfg.ckpt_path)
    datamodule: CharDataModule = make(cfg.data, "data")
    datamodule.setup("fit")  # its vocabulary, for the model
    run_config = OmegaConf.to_container(cfg, resolve=True)  # plain containers: checkpoints load weights_only
    model_cfg = GPTConfig(vocab_size=len(datamodule.tokenizer), **run_config["model"])
    if cfg.trainer.get("accelerator") in ("cpu", "gpu", "cuda"):  # (auto, mps, ...: not estimated)
        check_training_fits(model_cfg, cfg.data.batch_size, devices, gpu=cfg.trainer.accelerator != "cpu")
    model = FrostyLM(vocab=datamodule.tokenizer.chars, model=run_config["model"], optim=run_config["optim"],
                     scheduler=run_config["scheduler"], logged_config=run_config,  # to TensorBoard's HPARAMS only
                     config=OmegaConf.to_container(cfg, resolve=False),  # as composed, for resume= to compare
                     overrides=list(overrides or []), corpus_sha256=datamodule.text_sha256)
    if start is not None:
        check_compatible(cfg.ckpt_path, start["hyper_parameters"], model.hparams.vocab, model.hparams.model,
                         model.hparams.optim, model.hparams.corpus_sha256 if resumed_run else None)
        check_start_state(cfg.ckpt_path, start, model)
        if not resumed_run:  # (resume= has checked this before composing the run)
            check_more_to_train(start, cfg, Path(cfg.ckpt_path))
            start["state_dict"]["best_val_loss"] = torch.tensor(float("inf"))  # a new run: its best, and its patience,
            start["callbacks"] = {k: v for k, v in start.get("callbacks", {}).items() if "EarlyStop" not in k}  # own
    spawn_ranks_inside_sweep(cfg)
    # the stop is checked as a step starts, after the other callbacks' work there (status.json's record)
    callbacks = [make(c, f"callbacks.{key}") for key, c in cfg.get("callbacks", {}).items() if c is not None]
    callbacks.append(interrupt := StopOnInterrupt())
    # the Rich bar on a terminal only (piped, it prints once, at the end), and not beside a parallel sweep's jobs
    # (bars would garble each other): progress lines take its place on the console
    bars = parallel_jobs() == 1 and sys.stdout is not None and sys.stdout.isatty()  # None: started with it closed
    callbacks = [c for c in callbacks if bars or not isinstance(c, ProgressBar)]
    for lines in (c for c in callbacks if isinstance(c, ProgressLines)):
        lines.on_console, lines.record = not bars, record
    loggers = [make(c, f"logger.{key}") for key, c in cfg.get("logger", {}).items() if c is not None]
    checkpoint_io = AtomicCheckpointIO(loaded=(cfg.ckpt_path, start) if start is not None else None)
    accumulate = cfg.trainer.get("accumulate_grad_batches") or 1  # Lightning's interval counts batches, Frosty's steps
    trainer: L.Trainer = make(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False,
                              plugins=[checkpoint_io], enable_progress_bar=bars, accumulate_grad_batches=accumulate,
                              val_check_interval=cfg.trainer.val_check_interval * accumulate)
    # from here on the run's log says what it does (a refused resume adds no line of Frosty's to its train.log)
    if resumed_run:
        log.info("resuming %s from step %d", Path(cfg.paths.output_dir), start["global_step"])
    log.info("torch threads: %d", threads)
    log.info("model: %s parameters, vocabulary of %d characters", f"{model.model.num_params():,}",
             len(model.hparams.vocab))
    record.write(num_params=model.model.num_params())
    log.info("precision: %s", precision_line(cfg, str(trainer.precision)))
    per_step = cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches
    log.info("effective batch: %d windows of %d characters per step (data.batch_size %d x %d processes x %d "
             "accumulated); lr %g (not scaled with the batch)", per_step, cfg.model.block_size, cfg.data.batch_size,
             trainer.world_size, trainer.accumulate_grad_batches, cfg.optim.lr, extra=job_log_only())
    record.training_started = True
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path or None, weights_only=True)
    except MisconfigurationException as err:  # a setting Lightning checks only as it trains (a callback's monitor)
        raise FrostyError(" ".join(str(err).split())) from None
    except ProcessRaisedException as err:  # ddp_spawn's ranks (in a sweep): one's exception, as text (torch ended
        last = str(err).strip().splitlines()[-1]  # the others before they saved), e.g. ...callbacks.Stopped: SIGINT
        raise FrostyError(f"a process of the run ended with {last}: ddp_spawn ended the others at once, so the run "
                          "keeps its last validation's checkpoints") from None
    except NonFiniteLoss as err:  # last.ckpt keeps the last validation's state: the stop's would give NaN again
        lower, last = f"optim.lr={cfg.optim.lr / 2:g}", getattr(trainer.checkpoint_callback, "last_model_path", "")
        advice = (f"continue from the last validation's {last} with a lower learning rate, python train.py "
                  f"{command_arg('resume', Path(cfg.paths.output_dir))} {lower}" if last and Path(last).is_file()
                  else f"start again with a lower learning rate ({lower}), and keep trainer.gradient_clip_val set")
        raise FrostyError(f"{err}; {advice}") from None
    except (Stopped, SIGTERMException):
        record.data["steps"] = trainer.global_step  # as last.ckpt holds them: written with the status, at once
        raise
    except OSError as err:  # a logger's write (TensorBoard's thread, the csv's) names no file: the run's directory
        if err.filename is None and err.errno in FILE_ERRORS:
            raise OSError(err.errno, err.strerror, cfg.paths.output_dir) from err
        raise
    except SystemExit as err:  # Lightning's answer to a Ctrl-C before StopOnInterrupt's handler: exit status 1
        if isinstance(err.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    finally:
        interrupt.teardown()
    best = float(model.best_val_loss)
    if best == float("inf") and "val/loss" in trainer.callback_metrics:  # validations ran, and none was finite
        raise FrostyError(f"the val loss was never finite: the weights diverged; start again with a lower learning "
                          f"rate (optim.lr={cfg.optim.lr / 2:g}), and keep trainer.gradient_clip_val set")
    record.write(status="finished", best_val_loss=best,  # (ddp_spawn's trainer here trained nothing itself: 0)
                 **({"steps": trainer.global_step} if trainer.global_step else {}))
    try:  # (finished: trained and saved, whatever becomes of the summary)
        summarise(trainer, cfg, best, datamodule.tokenizer.decode(datamodule.val_data[:2000].tolist()))
    except KeyboardInterrupt:  # the run itself is complete and saved: Ctrl-C only cuts its summary short
        log.info("summary skipped (Ctrl-C); the run is complete")
    return best


def forget_refused_resume() -> None:
    """A resume refused before training leaves its run as it found it: the config Hydra saved for it goes too."""
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    if (subdir := hydra.output_subdir) and Path(subdir).match(".hydra/resumed-*"):
        shutil.rmtree(Path(hydra.runtime.output_dir) / subdir, ignore_errors=True)


def spawn_ranks_inside_sweep(cfg: DictConfig) -> None:
    """Plain ddp starts the other ranks by re-running the command line, which inside a sweep re-runs the sweep:
    there, unless SLURM or torchrun started them, ddp_spawn starts them from this job."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    externally_started = SLURMEnvironment.detect() or TorchElasticEnvironment.detect()
    if not in_sweep() or cfg.trainer.get("strategy") != "ddp" or externally_started:
        return
    log.info("inside a sweep: trainer.strategy=ddp_spawn instead of ddp")
    cfg.trainer.strategy = "ddp_spawn"
    if multiprocessing.get_start_method(allow_none=True) not in (None, "spawn", "fork", "forkserver"):
        multiprocessing.set_start_method("spawn", force=True)  # a joblib (loky) worker's own method spawns nothing


if __name__ == "__main__":
    cli.run_entry_point(main)
