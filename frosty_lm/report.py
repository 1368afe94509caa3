"""Compare runs: python -m frosty_lm.report PATH [PATH ...]

PATH is a sweep directory, a run directory, or any directory above runs (outputs/). Prints a markdown
table with one row per run and writes it to report.md, with val_loss.png (the val-loss curves of all
runs on one plot), in --out (default: PATH when there is one, else the current directory).
Metrics are read from each run's own logs: TensorBoard event files (TensorBoard's EventAccumulator),
or the csv logger's metrics.csv.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import socket
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from frosty_lm.errors import FrostyError, is_int, is_number
from frosty_lm.run_dirs import make_dir, run_record
from frosty_lm.status import alive

LN2 = math.log(2)
FINAL_TRAIN_POINTS = 5  # final train loss: mean of the last logged points (each is one batch's loss)


@dataclass
class Run:
    path: Path
    status: dict
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    times: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (seconds since the first log, value)

    @property
    def overrides(self) -> list[str]:
        return [o for o in self.status.get("overrides", []) if not o.startswith(("hydra.", "+search", "+sweep"))]

    def final(self, tag: str, points: int = 1) -> float | None:
        values = [v for _, v in self.curves.get(tag, [])][-points:]
        return sum(values) / len(values) if values else None

    def best_val(self) -> float | None:
        values = [v for _, v in self.curves.get("val/loss", [])]
        return min(values) if values else self.status.get("best_val_loss")

    def steps(self) -> int | None:
        steps = [s for tag in ("train/loss", "val/loss") for s, _ in self.curves.get(tag, [])]
        return self.status.get("steps") or (max(steps) if steps else None)

    def best_step(self) -> int | None:
        """The step of the lowest val loss."""
        val = self.curves.get("val/loss", [])
        return min(val, key=lambda point: point[1])[0] if val else None

    def rose_after_best(self) -> bool | None:
        """Whether the val loss went up after its best (overfitting, or a learning rate too high): the last val
        loss above the best by more than 1%. None before two validations."""
        val = [v for _, v in self.curves.get("val/loss", [])]
        return val[-1] > min(val) * 1.01 if len(val) >= 2 else None

    def gap(self) -> float | None:
        """The last val loss minus the mean train loss logged since the validation before it: how much better the
        model fits its training text than unseen text. None until the run has validated twice (before that, the
        train losses reach back to the untrained model and the gap misleads)."""
        val = self.curves.get("val/loss", [])
        if len(val) < 2:
            return None
        (before, _), (last, loss) = val[-2], val[-1]
        train = [v for s, v in self.curves.get("train/loss", []) if before < s <= last]
        return loss - sum(train) / len(train) if train else None

    @property
    def never_trained(self) -> bool:
        """A single run that failed before its training started (a failed download, a missing corpus): nothing to
        compare. A sweep's job keeps its row: which of the sweep's settings failed is part of its result."""
        return (self.status.get("status") == "failed" and self.status.get("training_started") is False
                and not (self.path.parent / "multirun.yaml").is_file())

    def state(self) -> str:
        """finished / failed / interrupted / running; a "running" run whose process is gone was killed."""
        state = self.status.get("status", "unknown")
        if state == "running" and self.status.get("host") == socket.gethostname() and not alive(self.status.get("pid")):
            return "killed"
        return state


def read_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    return read_logs(run_dir)[0]


def read_logs(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[tuple[float, float]]]]:
    """The run's scalars by step, and by wall time since its first logged point (TensorBoard's events only; the
    csv logger keeps no time). A resumed run's time includes the pause between its parts."""
    times = {}
    if list(run_dir.glob("events.out.tfevents.*")):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        events.Reload()
        scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
        curves = {tag: [(e.step, e.value) for e in points] for tag, points in scalars.items()}
        start = min((e.wall_time for points in scalars.values() for e in points), default=0.0)
        times = {tag: sorted((e.wall_time - start, e.value) for e in points) for tag, points in scalars.items()}
    else:
        curves = {}
        for metrics in sorted(run_dir.glob("**/metrics.csv")):
            try:
                with open(metrics, newline="", encoding="utf-8") as f:
                    rows = list(csv.DictReader(f))
            except (OSError, UnicodeDecodeError, csv.Error):  # unreadable: the run's row shows no curves
                continue
            for row in rows:  # what is not a step and a number (a damaged or foreign file) is left out
                step = number(row.get("step"))
                if step is None or step != int(step):
                    continue
                for tag, value in row.items():
                    if isinstance(tag, str) and tag not in ("step", "epoch") and number(value) is not None:
                        curves.setdefault(tag, []).append((int(step), number(value)))
    # a resumed run logs some steps twice: keep the last value logged for each step
    return {tag: sorted(dict(points).items()) for tag, points in curves.items()}, times


def number(text) -> float | None:
    """A metrics.csv cell as a finite number, else None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


FIELDS = {"status": lambda v: isinstance(v, str), "host": lambda v: isinstance(v, str), "pid": is_int,
          "steps": is_int, "num_params": is_int, "best_val_loss": is_number, "wall_time_s": is_number,
          "training_started": lambda v: isinstance(v, bool),
          "overrides": lambda v: isinstance(v, list) and all(isinstance(o, str) for o in v)}


def usable(record: dict) -> dict:
    """The fields of a status.json the report reads, those of the type train.py writes (a damaged or foreign record's
    others are left out: shown blank, its status unknown)."""
    return {key: value for key, value in record.items() if key in FIELDS and FIELDS[key](value)}


def find_runs(paths: list[Path]) -> list[Run]:
    """The runs (directories with a status.json) at or under paths, each once however many paths hold it."""
    runs, seen = [], set()
    for root in paths:
        if not root.exists():
            raise SystemExit(f"error: {root} does not exist: give a run or sweep directory, e.g. outputs/")
        for status_file in sorted({*root.glob("status.json"), *root.rglob("*/status.json")}):
            run_dir = status_file.parent
            if run_dir.resolve() not in seen:
                seen.add(run_dir.resolve())
                runs.append(Run(run_dir, usable(run_record(run_dir)), *read_logs(run_dir)))  # damaged: {}
    return runs


def names(runs: list[Run]) -> dict[Path, str]:
    """Each run's directory relative to the deepest directory above them all (a sweep's runs: their own names)."""
    if len(runs) == 1:
        return {runs[0].path: runs[0].path.name}
    root = Path(os.path.commonpath([str(r.path.resolve()) for r in runs]))
    return {r.path: str(r.path.resolve().relative_to(root)) for r in runs}


def differing(runs: list[Run]) -> tuple[list[str], dict[Path, str]]:
    """The overrides all runs share, and for each run the ones that set it apart."""
    common = set.intersection(*(set(r.overrides) for r in runs)) if runs else set()
    return sorted(common), {r.path: " ".join(o for o in r.overrides if o not in common) or "(defaults)" for r in runs}


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(runs: list[Run], labels: dict[Path, str]) -> str:
    run_names = names(runs)
    header = ["run", "overrides", "params", "steps", "wall time (s)", "final train loss", "best val loss",
              "best val bpc", "best at step", "val rose after", "train/val gap", "copied", "status"]
    rows = []
    for run in runs:
        train, best = run.final("train/loss", FINAL_TRAIN_POINTS), run.best_val()
        rows.append([run_names[run.path], labels[run.path], fmt(run.status.get("num_params")), fmt(run.steps()),
                     fmt(run.status.get("wall_time_s"), 1), fmt(train), fmt(best),
                     fmt(best / LN2 if best is not None else None), fmt(run.best_step()),
                     {True: "yes", False: "no", None: "-"}[run.rose_after_best()], fmt(run.gap()),
                     fmt(run.final("sample/copied"), 3), run.state()])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def plot(runs: list[Run], labels: dict[Path, str], path: Path, title: str, x: str = "step") -> None:
    """The val-loss curves of all runs on one plot, against the step or (x="time") the wall time in seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    colors = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20").colors
    run_names = names(runs)
    for i, run in enumerate(runs):
        points = (run.times if x == "time" else run.curves).get("val/loss", [])
        label = labels[run.path] if len(labels[run.path]) <= 60 else run_names[run.path]  # a legend that fits
        if points:
            ax.plot(*zip(*points), marker=".", color=colors[i % len(colors)], label=label)
    ax.set_xlabel("wall time since the run's first log (s)" if x == "time" else "step")
    ax.set_ylabel("val loss (nats per character)")
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def samples(runs: list[Run], chars: int, prompt: str, seed: int) -> str:
    """A section with a sample from each run's best.ckpt: the same prompt, seed and temperature (0.8) for every
    run, so that their text compares by eye (characters of the prompt outside a run's vocabulary are dropped)."""
    from frosty_lm.checkpoint import load_checkpoint, model_from_checkpoint
    from frosty_lm.errors import FrostyError
    from frosty_lm.generation import default_prompt, sample_text

    run_names = names(runs)
    parts = [f"## Samples ({chars} characters from each run's best.ckpt; prompt {prompt!r}, seed {seed}, "
             "temperature 0.8)\n"]
    for run in runs:
        best = run.path / "checkpoints" / "best.ckpt"
        if not best.is_file():
            continue
        try:
            model, vocab = model_from_checkpoint(load_checkpoint(best), best)
        except FrostyError as err:
            parts.append(f"### {run_names[run.path]}\n\n(no sample: {err})\n")
            continue
        start = "".join(ch for ch in prompt if ch in vocab) or default_prompt(vocab)
        text = sample_text(model, vocab, start, chars, temperature=0.8, seed=seed)
        parts.append(f"### {run_names[run.path]}\n\n```\n{text.strip(chr(10))}\n```\n")
    return "\n".join(parts)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad argument in one line and exit status 1, as Frosty's other errors (not usage + 2)."""

    def error(self, message: str):
        self.exit(1, f"error: {message} ({self.prog} --help lists the arguments)\n")


def count(text: str) -> int:
    """--samples N: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 0")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m frosty_lm.report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="sweep or run directories (or outputs/)")
    parser.add_argument("--out", type=Path, default=None, help="where report.md and val_loss.png go")
    parser.add_argument("--x", choices=("step", "time"), default="step", help="the plot's x axis (default: step)")
    parser.add_argument("--samples", type=count, default=200, metavar="N",
                        help="characters sampled from each run's best.ckpt, same prompt and seed for all (0: none)")
    parser.add_argument("--prompt", default="\n", help="the samples' prompt (default: a line break)")
    parser.add_argument("--seed", type=int, default=0, help="the samples' seed")
    args = parser.parse_args(argv)
    found = find_runs(args.paths)
    runs = [run for run in found if not run.never_trained]
    if len(runs) < len(found):
        print(f"left out {len(found) - len(runs)} single runs that failed before training (status.json says why)",
              file=sys.stderr)
    if not runs:
        print(f"error: no runs (directories with status.json) under {', '.join(map(str, args.paths))}: "
              "give a sweep or run directory of train.py", file=sys.stderr)
        return 1
    out = args.out or (args.paths[0] if len(args.paths) == 1 and args.paths[0].is_dir() else Path("."))
    try:
        make_dir(str(out), "--out DIR")
    except FrostyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    common, labels = differing(runs)
    title = " ".join(common) or ", ".join(map(str, args.paths))
    text = (f"{len(runs)} runs" + (f"; all with: `{' '.join(common)}`" if common else "")
            + "\n\n" + table(runs, labels) + "\n")
    if args.samples > 0:
        text += "\n" + samples(runs, args.samples, args.prompt, args.seed)
    # each written beside and renamed into place: a link planted at either name (a directory received from
    # someone else) is replaced, not written through
    (out / ".report.md.tmp").write_text(text)
    os.replace(out / ".report.md.tmp", out / "report.md")
    plot(runs, labels, out / ".val_loss.tmp.png", title, args.x)
    os.replace(out / ".val_loss.tmp.png", out / "val_loss.png")
    print(text)
    print(f"wrote {out / 'report.md'} and {out / 'val_loss.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from frosty_lm.cli import run_entry_point

    run_entry_point(lambda: sys.exit(main()))
