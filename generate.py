"""Sample from a trained checkpoint: `python generate.py prompt="Whose woods these are"` (see conf/generate.yaml).
Torch only, no Lightning, so that it starts quickly; the decoding itself is frosty_lm/generation.py."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from frosty_lm.checkpoint import load_checkpoint, model_from_checkpoint
from frosty_lm.cli import exit_on_user_error, read_small, run_entry_point, run_record, stdout_failed
from frosty_lm.config import FrostyError, is_int, is_number, must
from frosty_lm.generation import check_prompt, check_sampling, check_text, default_prompt, stream_text
from frosty_lm.run_dirs import BEST, all_runs, newest_run
from frosty_lm.status import run_state

DATASETS = Path(__file__).resolve().parent / "conf" / "dataset"  # the named corpora


def choose_checkpoint(cfg: DictConfig) -> tuple[str | Path, str | None]:
    """The checkpoint to sample from, and the start of the stderr line that names it (None for the user's own
    ckpt_path=): ckpt_path=FILE, run=latest|DIR's best.ckpt, or the best finished run on corpus."""
    given = [f"{key}={cfg[key]}" for key in ("ckpt_path", "run", "corpus") if cfg.get(key) not in (None, "")]
    if len(given) > 1:
        raise FrostyError(f"{' and '.join(given)} conflict: ckpt_path=FILE, run=latest|DIR and corpus=NAME each "
                          "choose the checkpoint; give one of them")
    if cfg.ckpt_path:
        return cfg.ckpt_path, None
    outputs = cfg.paths.outputs_dir
    if cfg.get("run") not in (None, ""):  # latest: the newest run's (by its last checkpoint: resume=latest's run)
        latest = cfg.run == "latest"
        run = newest_run(outputs, BEST) if latest else Path(str(cfg.run)).expanduser()
        if run is None:
            raise no_runs(outputs)
        path = has_best(run, f"run=latest, {run}," if latest else f"run={cfg.run}")
        return path, f"using {path}: run={cfg.run} ({about(run)})"
    return default_checkpoint(outputs, None if cfg.get("corpus") in (None, "") else str(cfg.corpus))


def default_checkpoint(outputs_dir: str, corpus: str | None) -> tuple[Path, str]:
    """The best.ckpt of the best finished run on corpus (None: the newest run's corpus); if there is none, of the
    newest run on it, said so."""
    runs = all_runs(outputs_dir, BEST)  # (a run with callbacks.model_checkpoint.save_last=false has no last.ckpt)
    if not runs:
        raise no_runs(outputs_dir)
    corpora = {run: run_corpus(run) for run in runs}  # each run's .hydra/config.yaml, read once
    if corpus is not None and not any(on_corpus(found, corpus) for found in corpora.values()):
        on = sorted({found for found in corpora.values() if found})  # each text:FILE too: corpus= takes it
        what = (f"train one (`python train.py dataset={corpus}{' data.path=FILE' * (corpus == 'text')}`)"
                if (DATASETS / f"{corpus}.yaml").is_file()
                else f"its runs are on {', '.join(on)}" if on else "give a corpus it has runs on")
        raise FrostyError(f"no run on corpus {corpus} under {outputs_dir}/: {what}, or leave out corpus= for the "
                          "newest run's corpus")
    newest = [run for run in runs if corpus is None or on_corpus(corpora[run], corpus)][-1]
    corpus = corpora[newest] or corpus  # corpus=text: the runs on the newest one's file (text:FILE), not on any
    records = {run: run_record(run) for run in runs if corpus is not None and on_corpus(corpora[run], corpus)}
    finished = {run: record["best_val_loss"] for run, record in records.items()  # (each holds a best.ckpt)
                if record.get("status") == "finished" and is_number(record.get("best_val_loss"))}
    if finished:
        best = min(finished, key=finished.get)
        runs = f"{len(finished)} finished run{'s' if len(finished) > 1 else ''}"
        return best / BEST, f"using {best / BEST}: best of {runs} on {corpus}"
    path = has_best(newest, f"the newest run under {outputs_dir}/, {newest},")
    why = f"no finished run on {corpus}" if corpus else f"the newest run's corpus is unknown ({newest}/.hydra)"
    return path, f"{why}; using the newest run's {path} ({about(newest)})"


def run_corpus(run: Path) -> str | None:
    """The corpus a run trained on: data.name in its .hydra/config.yaml, with data.path if it names a file ("text:FILE",
    so that two files do not compare); None if the file is missing, damaged or foreign."""
    try:  # as written, nothing resolved: the file may come from someone else
        data = yaml.safe_load(read_small(run / ".hydra" / "config.yaml"))["data"]  # (YAML's aliases stay shared)
        name, path = data["name"], data.get("path")
    except Exception:  # unreadable, not YAML, not a mapping, no data.name: whatever the error, the corpus is unknown
        return None
    if not isinstance(name, str) or "${" in name:
        return None
    return f"{name}:{path}" if isinstance(path, str) and path and "${" not in path else name


def on_corpus(found: str | None, corpus: str) -> bool:
    """Whether a run's corpus (run_corpus) is corpus: a name (frost, or text: any file) or a run's "text:FILE"."""
    return found is not None and (found == corpus or found.startswith(f"{corpus}:"))


def no_runs(outputs_dir: str) -> FrostyError:
    where = (f"{outputs_dir}/" if Path(outputs_dir).is_dir() else f"{outputs_dir} (not a directory)"
             if Path(outputs_dir).exists() else f"{outputs_dir} (no such directory)")
    return FrostyError(f"no {BEST.name} found under {where}: train a model first with `python train.py`, "
                       "or give ckpt_path=PATH")


def has_best(run: Path, name: str) -> Path:
    """run's checkpoints/best.ckpt, or a FrostyError that starts with name."""
    if run.is_file():
        raise FrostyError(f"{name} is a file, not a run directory: give ckpt_path={run} to sample from a checkpoint "
                          "file")
    if not (run / BEST).is_file():
        what = "does not exist" if not run.exists() else f"has no {BEST}"
        why = (f"a sweep's directory, whose jobs are runs: paths.outputs_dir={run} picks the best of them"
               if any(run.glob(f"*/{BEST}")) else "not a run directory of train.py, or a run stopped before its "
               "first validation")
        raise FrostyError(f"{name} {what} ({why}): give a run directory that has one, or ckpt_path=FILE")
    return run / BEST


def about(run: Path) -> str:
    """'status finished, corpus frost'"""
    return f"status {run_state(run_record(run))}, corpus {run_corpus(run) or 'unknown'}"


def score(ckpt: dict) -> str:
    """'val loss 1.8123 at step 2000': a best.ckpt keeps the val loss it was saved for in best_val_loss."""
    loss = ckpt["state_dict"].get("best_val_loss")
    loss = float(loss) if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None
    step = ckpt.get("global_step")
    return (f"val loss {loss:.4f}" if is_number(loss) else "val loss unknown") + (
        f" at step {step}" if is_int(step) else "")


@hydra.main(version_base="1.3", config_path=str(Path(__file__).parent / "conf"), config_name="generate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    if sys.stdout is None:  # started with its standard output closed (generate.py >&-)
        raise FrostyError("standard output is closed: generate.py writes its samples there; send it to a file "
                          "(> samples.txt) or a pipe")
    check_sampling(cfg)  # before a checkpoint is loaded
    for key in ("ckpt_path", "run", "corpus", "device", "paths.outputs_dir"):  # names and paths: text, as typed
        check_text(OmegaConf.select(cfg, key), key)
    outputs = cfg.paths.outputs_dir
    must(bool(outputs), "paths.outputs_dir", outputs, "a directory: where train.py puts runs")
    path, chosen = choose_checkpoint(cfg)
    ckpt = load_checkpoint(path)
    model, vocab = model_from_checkpoint(ckpt, path)
    if chosen:
        print(f"{chosen}, {score(ckpt)} (choose with run=latest|DIR or ckpt_path=FILE)", file=sys.stderr, flush=True)
    prompt = cfg.prompt or default_prompt(vocab)  # documented: empty starts from a line break (or the first character)
    check_prompt(vocab, prompt)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        if torch.device(device).type == "meta":  # tensors without data: nothing to sample from
            raise ValueError("a meta device holds no data")
        model.to(device)
    except (RuntimeError, ValueError, AssertionError, ImportError) as err:  # (ImportError: torch.hpu, ...)
        raise FrostyError(f"device={device!r} cannot be used here ({' '.join(str(err).split())[:120]}): "
                          "use device=cpu, or device=cuda on a machine with a GPU") from None
    try:
        for i in range(cfg.num_samples):
            if i:
                print(f"--- sample {i + 1} ---", file=sys.stderr, flush=True)
            print(prompt, end="")
            for ch in stream_text(model, vocab, prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p,
                                  cfg.seed + i):
                print(ch, end="", flush=True)
            print(flush=True)
    except OSError as err:  # the reader went away (generate.py | head), or e.g. a full disk behind generate.py > FILE
        stdout_failed(err)


if __name__ == "__main__":
    if sys.stderr is None:  # started with it closed (2>&-): print's notes would go to stdout, into the samples
        sys.stderr = open(os.devnull, "w")
    run_entry_point(main)
