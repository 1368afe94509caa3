import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from frosty_lm.cli import run_entry_point  # (at import: the resolver and the schemas that conf/ uses)

ROOT = Path(__file__).resolve().parents[1]
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # tests side by side (pytest -n): each worker's torch its share of the
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))  # cores
CONF = ROOT / "conf"
# Seconds off every tiny run (docs/testing.md): short samples at validations and in the summary.
QUICK = ["callbacks.sample_text.max_new_tokens=20", "callbacks.copied.chars=100", "summary_sample_chars=20"]
TINY = ["model=tiny", "trainer.max_steps=30", "trainer.val_check_interval=15", "data.batch_size=8", *QUICK]


def job_dir(sweep: Path, *overrides: str) -> Path:
    """The one job directory of a sweep (named N_key=value,...) whose name holds each of overrides."""
    found = [p for p in sweep.iterdir() if p.is_dir() and set(overrides) <= set(p.name.split("_", 1)[-1].split(","))]
    assert len(found) == 1, (overrides, sorted(p.name for p in sweep.iterdir()))
    return found[0]


def poem(lines: int = 200) -> str:
    """A small corpus of verse-like text, made up here (tests never need a real corpus)."""
    words = ["snow", "woods", "road", "dark", "deep", "miles", "sleep", "keep", "horse", "lake", "stop", "ice"]
    return "".join(
        " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(3 + i % 4)).capitalize()
        + (",\n" if i % 4 else ".\n\n")
        for i in range(lines)
    )


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """pytest -n auto (the default run): every core, xdist's own count; but the slow tests (pytest -m slow) in one
    process: their sweeps, DDP and signal tests use both cores themselves and time signals against runs' progress."""
    marks = config.option.markexpr or ""
    return 0 if "slow" in marks and "not slow" not in marks else None


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(poem(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def frost_dir() -> Path:
    """The directory holding frost.txt: FROSTY_DATA_DIR (CI sets it), else ../shared/data beside the repo."""
    for candidate in (os.environ.get("FROSTY_DATA_DIR"), ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "frost.txt").is_file():
            return Path(candidate)
    pytest.skip("frost.txt not found: set FROSTY_DATA_DIR to the directory that holds it")


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    """Each test leaves SIGINT and SIGTERM as it found them: a run in this process that Lightning stops on a
    KeyboardInterrupt sets SIGINT to be ignored, and every process started after it would inherit that (Python
    installs its Ctrl-C handler only where SIGINT is not ignored)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def as_from_a_shell() -> None:
    """A started train.py gets Ctrl-C and SIGTERM as from a terminal, whatever this process set."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run(script: str, *args: str, cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run train.py or generate.py as a user would, from cwd."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", "FROSTY_DEBUG": "0", **(env or {})}
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300,
        preexec_fn=as_from_a_shell)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def split_import_times(stderr: str) -> tuple[str, set[str]]:
    """The stderr of a `python -X importtime` process -> (its lines other than the import lines, the top-level
    packages it imported)."""
    lines = stderr.splitlines()
    imports = [line for line in lines if line.startswith("import time:")]
    rest = "\n".join(line for line in lines if not line.startswith("import time:"))
    return rest, {line.rsplit("|", 1)[1].strip().split(".")[0] for line in imports}


def start(script: str, *args: str, cwd: Path) -> subprocess.Popen:
    """Start train.py or generate.py as a user would, in the background; its stdout and stderr together, as text."""
    return subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=as_from_a_shell)


def start_training(run_dir: Path, text_file: Path, *extra: str) -> subprocess.Popen:
    args = [*TINY, "model.dropout=0.1", "trainer.val_check_interval=10", "dataset=text", f"data.path={text_file}"]
    return start("train.py", *args, *extra, f"hydra.run.dir={run_dir}", cwd=run_dir.parent)


def wait_for_checkpoint(path: Path, proc: subprocess.Popen, min_step: int, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        if path.is_file():
            step = torch.load(path, weights_only=True)["global_step"]  # atomic writes: always a whole file
            if step >= min_step:
                return step
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step >= {min_step} in {timeout}s")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny training run on a made-up corpus, shared by the tests that need a checkpoint. It trains in this
    process, through train.py's entry point (a fresh interpreter would add its imports: seconds)."""
    work = tmp_path_factory.mktemp("trained")
    corpus = work / "corpus.txt"
    corpus.write_text(poem(), encoding="utf-8")
    run_dir = work / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(work)
        code = call_entry_point("train.py", [*TINY, "dataset=text", f"data.path={corpus}", f"hydra.run.dir={run_dir}"],
                                monkeypatch)
    log = run_dir / "train.log"
    assert code == 0, f"train.py exited {code}:\n{log.read_text() if log.is_file() else '(no train.log)'}"
    assert (run_dir / "checkpoints" / "best.ckpt").is_file(), f"train.py exited 0 without a best.ckpt in {run_dir}"
    return run_dir


def _entry_point(script: str):
    spec = importlib.util.spec_from_file_location(f"frosty_entry_{Path(script).stem}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call_entry_point(script: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run train.py's or generate.py's main() in this process, as from the command line: its exit status."""
    module = _entry_point(script)
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setenv("FROSTY_DEBUG", "0")
    try:
        run_entry_point(module.main)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


@pytest.fixture
def invoke(capsys, monkeypatch):
    """Run train.py or generate.py in this process, as from the command line (Hydra's main); returns (exit status,
    stdout, stderr). Faster than a subprocess, for the many bad-input checks."""

    def call(script: str, *args: str) -> tuple[int, str, str]:
        code = call_entry_point(script, list(args), monkeypatch)
        out, err = capsys.readouterr()
        return code, out, err

    return call


def snapshot(root: Path) -> dict:
    """Every file under root with its content and modification time, to show that nothing changed."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}
