"""Compare runs: python -m frosty_lm.report PATH [PATH ...]

PATH is a sweep or run directory, or any directory above runs (outputs/). Prints a markdown table, a row per run,
and writes it to report.md, with val_loss.png, in --out (default: PATH; several need --out). Metrics come from each
run's TensorBoard event files, or its metrics.csv."""
import argparse
import csv
import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from frosty_lm.cli import OneLineParser, make_dir, read_small, replace_file, run_entry_point, run_record, stdout_failed
from frosty_lm.config import FrostyError, is_int, is_number
from frosty_lm.status import run_state

FINAL_TRAIN_POINTS = 5  # final train loss: mean of the last logged points (each is one batch's loss)
# status.json's fields the report reads, in train.py's types: a damaged record's others are shown blank
FIELDS = {"status": lambda v: isinstance(v, str), "host": lambda v: isinstance(v, str), "pid": is_int,
          "steps": is_int, "num_params": is_int, "best_val_loss": is_number, "wall_time_s": is_number,
          "training_started": lambda v: isinstance(v, bool),
          "overrides": lambda v: isinstance(v, list) and all(isinstance(o, str) for o in v)}


@dataclass
class Run:
    path: Path
    status: dict
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    times: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (seconds since the first log, value)
    name: str = ""  # its directory, relative to the deepest one above all the runs compared (name_runs)
    label: str = ""  # the overrides that set it apart from the other runs

    @property
    def overrides(self) -> list[str]:
        return [o for o in self.status.get("overrides", []) if not o.startswith(("hydra.", "+search", "+sweep"))]

    def gap(self) -> float | None:
        """The last val loss minus the mean train loss since the validation before it (None before two validations)."""
        val = self.curves.get("val/loss", [])
        if len(val) < 2:
            return None
        (before, _), (last, loss) = val[-2], val[-1]
        train = [v for s, v in self.curves.get("train/loss", []) if before < s <= last]
        return loss - sum(train) / len(train) if train else None

    @property
    def never_trained(self) -> bool:
        """A single run that failed before training: nothing to compare (a sweep's job, as Hydra records, is one)."""
        return (self.status.get("status") == "failed" and self.status.get("training_started") is False
                and b"\n  mode: MULTIRUN\n" not in (read_small(self.path / ".hydra" / "hydra.yaml") or b""))


def read_logs(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[tuple[float, float]]]]:
    """The run's scalars by step, and by wall time since its first logged point (TensorBoard's events only; the
    csv logger keeps no time). A resumed run's time includes the pause between its parts."""
    times = {}
    if (events := list(run_dir.glob("events.out.tfevents.*"))) and all(e.is_file() for e in events):  # (no FIFO)
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        events.Reload()
        scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
        curves = {tag: [(e.step, e.value) for e in points] for tag, points in scalars.items()}
        start = min((e.wall_time for points in scalars.values() for e in points), default=0.0)
        times = {tag: sorted((e.wall_time - start, e.value) for e in points) for tag, points in scalars.items()}
    else:
        curves = {}
        found = [p for p in run_dir.glob("**/metrics.csv") if p.is_file()]  # (a received run's FIFO would block)
        for metrics in sorted(found, key=lambda p: (len(str(p)), str(p))):  # version_9, 10
            try:
                with open(metrics, newline="", encoding="utf-8") as f:
                    rows = list(csv.DictReader(f))
            except (OSError, UnicodeDecodeError, csv.Error):  # unreadable: the run's row shows no curves
                continue
            for row in rows:  # what is not a step and a number (a damaged or foreign file) is left out
                step = number(row.get("step"))
                if step is not None and step == int(step):
                    for tag, value in row.items():  # a row's extra cells: tag None, value a list (not a number)
                        if tag not in ("step", "epoch") and (value := number(value)) is not None:
                            curves.setdefault(tag, []).append((int(step), value))
    # a resumed run logs some steps twice: keep the last value logged for each step
    return {tag: sorted(dict(points).items()) for tag, points in curves.items()}, times


def number(text) -> float | None:
    try:
        return value if math.isfinite(value := float(text)) else None
    except (TypeError, ValueError):
        return None


def find_runs(paths: list[Path]) -> list[Run]:
    """The runs (directories with a status.json) at or under paths, each once however many paths hold it."""
    runs = {}
    for root in paths:
        if not root.exists():
            raise FrostyError(f"{root} does not exist: give a run or sweep directory, e.g. outputs/")
        for status_file in sorted({*root.glob("status.json"), *root.rglob("*/status.json")}):
            run_dir = status_file.parent
            if run_dir.resolve() not in runs:
                status = {k: v for k, v in run_record(run_dir).items() if k in FIELDS and FIELDS[k](v)}  # {}: damaged
                runs[run_dir.resolve()] = Run(run_dir, status, *read_logs(run_dir))
    return list(runs.values())


def name_runs(runs: list[Run]) -> list[str]:
    """Sets each run's name and label; returns the overrides all runs share."""
    common = set.intersection(*(set(r.overrides) for r in runs))
    root = Path(os.path.commonpath([str(r.path.resolve()) for r in runs]))
    for run in runs:  # one run: its own name, not "."; a sweep's job (N_overrides) its number: the label has the rest
        name = str(run.path.resolve().relative_to(root)) if len(runs) > 1 else run.path.resolve().name
        run.name = re.sub(r"(^|/)(\d+)_[^/]*$", r"\1\2", name)
        run.label = " ".join(o for o in run.overrides if o not in common) or "(defaults)"
    return sorted(common)


def fmt(value, digits: int = 4) -> str:
    return (f"{value:.{digits}f}" if isinstance(value, float) else "-" if value is None
            else f"{value:,}" if isinstance(value, int) else str(value))


def table(runs: list[Run]) -> str:
    header = ["run", "overrides", "params", "steps", "wall time (s)", "final train loss", "best val loss",
              "best val bpc", "best at step", "val rose after", "train/val gap", "copied", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        val = run.curves.get("val/loss", [])
        train = [v for _, v in run.curves.get("train/loss", [])][-FINAL_TRAIN_POINTS:]
        logged_steps = [s for tag in ("train/loss", "val/loss") for s, _ in run.curves.get(tag, [])]
        best_step, best = min(val, key=lambda point: point[1]) if val else (None, run.status.get("best_val_loss"))
        rose = "-" if len(val) < 2 else "yes" if val[-1][1] > best * 1.01 else "no"  # overfitting, or too high an lr
        copied = run.curves.get("sample/copied", [(None, None)])[-1][1]
        row = [run.name, run.label, fmt(run.status.get("num_params")),
               fmt(run.status.get("steps") or max(logged_steps, default=None)), fmt(run.status.get("wall_time_s"), 1),
               fmt(sum(train) / len(train) if train else None), fmt(best),
               fmt(best / math.log(2) if best is not None else None), fmt(best_step), rose, fmt(run.gap()),
               fmt(copied, 3), run_state(run.status)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def plot(runs: list[Run], file: BinaryIO, title: str, x: str = "step") -> None:
    """The val-loss curves of all runs on one plot, against the step or (x="time") the wall time in seconds."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100, layout="tight")
    ax = fig.subplots()
    colors = colormaps["tab10" if len(runs) <= 10 else "tab20"].colors
    for i, run in enumerate(runs):
        points = (run.times if x == "time" else run.curves).get("val/loss", [])
        if points:  # labelled by what sets the run apart, if that fits in a legend
            ax.plot(*zip(*points), marker=".", color=colors[i % len(colors)],
                    label=run.label if len(run.label) <= 60 else run.name)
    ax.set(xlabel="wall time since the run's first log (s)" if x == "time" else "step",
           ylabel="val loss (nats per character)")
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.savefig(file, format="png")


def samples(runs: list[Run], chars: int, prompt: str, seed: int) -> str:
    """A sample from each run's best.ckpt, all with the same prompt, seed and temperature: they compare by eye."""
    from frosty_lm.checkpoint import load_checkpoint, model_from_checkpoint
    from frosty_lm.generation import prompt_in, sample_text

    parts = [f"## Samples ({chars} characters from each run's best.ckpt; prompt {prompt!r}, seed {seed}, "
             "temperature 0.8)\n"]
    for run in runs:
        best = run.path / "checkpoints" / "best.ckpt"
        if not best.is_file():
            continue
        try:
            model, vocab = model_from_checkpoint(load_checkpoint(best), best)
        except FrostyError as err:
            body = f"(no sample: {err})"
        else:
            start = prompt_in(vocab, prompt)
            body = "```\n" + sample_text(model, vocab, start, chars, temperature=0.8, seed=seed).strip("\n") + "\n```"
        parts.append(f"### {run.name}\n\n{body}\n")
    return "\n".join(parts) if parts[1:] else ""  # (no run with a best.ckpt: no section)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m frosty_lm.report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="sweep or run directories (or outputs/)")
    parser.add_argument("--out", type=Path, default=None, help="where report.md and val_loss.png go")
    parser.add_argument("--x", choices=("step", "time"), default="step", help="the plot's x axis (default: step)")
    parser.add_argument("--samples", type=int, default=200, metavar="N",
                        help="characters sampled from each run's best.ckpt, same prompt and seed for all (0: none)")
    parser.add_argument("--prompt", default="\n", help="the samples' prompt (default: a line break)")
    parser.add_argument("--seed", type=int, default=0, help="the samples' seed")
    args = parser.parse_args(argv)
    if args.samples < 0:
        parser.error(f"--samples {args.samples}: give an integer >= 0 (0: no samples)")
    if not 0 <= args.seed < 2**32:
        parser.error(f"--seed {args.seed}: give an integer in [0, 2**32)")
    if len(args.paths) > 1 and args.out is None:  # no report.md of the user's replaced in the current directory
        parser.error("several PATHs: give --out DIR, where report.md and val_loss.png go")
    try:
        write_report(args)
    except FrostyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def write_report(args: argparse.Namespace) -> None:
    found = find_runs(args.paths)
    runs = [run for run in found if not run.never_trained]
    if len(runs) < len(found):
        print(f"left out {len(found) - len(runs)} single runs that failed before training (status.json says why)",
              file=sys.stderr)
    for run in (run for run in runs if args.x == "time" and run.curves and not run.times):
        print(f"{run.path}: no wall times (the csv logger keeps none): left out of the time plot", file=sys.stderr)
    if not runs:
        raise FrostyError(f"no runs (directories with status.json) under {', '.join(map(str, args.paths))}: give a "
                          "sweep or run directory of train.py")
    out = args.out or args.paths[0]
    make_dir(str(out), "--out DIR")
    common = name_runs(runs)
    title = " ".join(common) or ", ".join(map(str, args.paths))
    text = f"{len(runs)} run{'s' * (len(runs) > 1)}" + (f"; all with: `{' '.join(common)}`" if common else "")
    text += f"\n\n{table(runs)}\n"
    if args.samples > 0 and (sampled := samples(runs, args.samples, args.prompt, args.seed)):
        text += "\n" + sampled
    for name, write in (("report.md", lambda f: f.write(text.encode("utf-8"))),
                        ("val_loss.png", lambda f: plot(runs, f, title, args.x))):
        try:  # whole or not at all, a link planted at its name replaced, not written through
            replace_file(out / name, write)
        except OSError as err:
            raise FrostyError(f"cannot write {out / name}: {err.strerror or err}: remove what is in the way, or give "
                              "another directory with --out DIR") from None
    try:
        print(text, flush=True)
    except OSError as err:  # its reader went away (| head), or a full disk behind > FILE
        stdout_failed(err)
    finally:
        print(f"wrote {out / 'report.md'} and {out / 'val_loss.png'}", file=sys.stderr)


if __name__ == "__main__":
    run_entry_point(lambda: sys.exit(main()))
