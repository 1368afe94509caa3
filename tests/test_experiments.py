"""Sweeps through the real entry point (basic, joblib and Optuna), a sweep with a failing job, and the report."""
import errno
import json
import os
import re
import shutil
import signal
import socket
from pathlib import Path

import pytest
import yaml
from matplotlib.image import imread

from conftest import TINY, job_dir, run
from frosty_lm.report import main as report_main
from frosty_lm.report import read_logs

SWEEP = [*TINY, "trainer.max_steps=10", "trainer.val_check_interval=5"]


def report_rows(capsys, sweep: Path) -> dict[str, list[str]]:
    assert report_main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == (sweep / "report.md").read_text().strip()
    lines = [line for line in printed.splitlines() if line.startswith("| ") and not line.startswith("| run ")]
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split(" | ")] for line in lines)}
    png = imread(sweep / "val_loss.png")
    assert png.shape[0] > 100 and png.shape[1] > 100
    return rows


def assert_grid(sweep: Path, rows: dict[str, list[str]]) -> None:
    assert len(rows) == 4
    for d in ("0.0", "0.2"):
        for n in (1, 2):
            job = job_dir(sweep, f"model.dropout={d}", f"model.n_layer={n}", "dataset=text", "model=tiny")
            assert "data.path" not in job.name and "callbacks." not in job.name  # excluded from names
            cells = rows[job.name.split("_")[0]]  # a job's number: the overrides column has the rest
            assert cells[1] == f"model.dropout={d} model.n_layer={n}"  # the overrides that differ
            assert cells[3] == "10" and cells[-1] == "finished"
            assert 2.0 < float(cells[6]) < 6.0
            assert float(cells[7]) == pytest.approx(float(cells[6]) / 0.693147, abs=2e-4)
            assert (job / "checkpoints" / "best.ckpt").is_file()
            assert len(list(job.glob("events.out.tfevents.*"))) == 1  # its own TensorBoard run
    one_layer = rows[job_dir(sweep, "model.dropout=0.0", "model.n_layer=1").name.split("_")[0]][2]
    two_layers = rows[job_dir(sweep, "model.dropout=0.0", "model.n_layer=2").name.split("_")[0]][2]
    assert int(two_layers.replace(",", "")) > int(one_layer.replace(",", ""))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_2x2_sweep_and_its_report(launcher, text_file, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    extra = ["hydra/launcher=basic"] if launcher == "basic" else []  # joblib with 2 jobs is the default
    result = run("train.py", "-m", *SWEEP, "dataset=text", f"data.path={text_file}", "model.dropout=0.0,0.2",
                 "model.n_layer=1,2", *extra, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert f"4 of 4 runs finished; compare them with: python -m frosty_lm.report {sweep}" in result.stderr
    assert_grid(sweep, report_rows(capsys, sweep))
    if launcher == "joblib":  # each of the 2 parallel jobs got its share of the cores
        logs = [(job_dir(sweep, d, n) / "train.log").read_text()
                for d, n in (("model.dropout=0.0", "model.n_layer=1"), ("model.dropout=0.2", "model.n_layer=2"))]
        assert all(f"torch threads: {max(1, os.cpu_count() // 2)}" in log for log in logs)
        # interleaved on the console, so every job's line names its job; samples and commands stay in train.log
        console = [line for line in result.stdout.splitlines() if "validation at step" in line]
        assert len(console) == 4 * 2
        assert all(re.match(r"\[job [0-3]\] \[", line) for line in console), console
        assert "sample:" not in result.stdout and "python generate.py" not in result.stdout
        assert all("sample:" in log and "python generate.py" in log for log in logs)


@pytest.mark.slow
def test_optuna_search_minimises_the_best_val_loss(text_file, tmp_path):
    sweep = tmp_path / "search"
    result = run("train.py", "-m", "+search=optuna", *SWEEP, "dataset=text", f"data.path={text_file}",
                 "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1", "hydra.launcher.n_jobs=1",  # one at a time,
                 f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # as +search=speedrun: each job in the sweep's process
    records = [json.loads(p.read_text()) for p in sweep.glob("*/status.json")]
    assert len(records) == 3 and all(r["status"] == "finished" for r in records)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(min(r["best_val_loss"] for r in records))
    assert f"Best value: {results['best_value']}" in result.stdout + result.stderr


@pytest.mark.slow
def test_a_search_keeps_its_study_in_a_stored_database_and_continues_it(text_file, tmp_path):
    import optuna

    db = tmp_path / "study.db"
    for name in ("first", "continued"):
        run("train.py", "-m", "+search=optuna", *SWEEP, "dataset=text", f"data.path={text_file}",
            "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1", "hydra.launcher.n_jobs=1",
            f"hydra.sweeper.storage=sqlite:///{db}", f"hydra.sweep.dir={tmp_path / name}", cwd=tmp_path)
    trials = optuna.load_study(study_name="frosty", storage=f"sqlite:///{db}").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]


@pytest.mark.slow
def test_a_failing_trial_does_not_stop_the_search(text_file, tmp_path):
    """A failed trial's job returns no value: Optuna's sweeper counts it as failed (max_failure_rate: 1.0 in the
    search presets) and goes on, and the best value is the best finished trial's."""
    sweep = tmp_path / "search"
    result = run("train.py", "-m", "+search=optuna", *SWEEP, "dataset=text", f"data.path={text_file}",
                 "model.n_head=choice(3,2)", "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                 check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr  # 1: a trial failed
    records = [json.loads(p.read_text()) for p in sweep.glob("*/status.json")]
    states = sorted(r["status"] for r in records)
    assert len(records) == 4 and "failed" in states and "finished" in states, states  # (seeded: 2 of each)
    assert f"{states.count('finished')} of 4 runs finished" in result.stderr
    assert "failed: " in result.stderr and "is not divisible by model.n_head=3" in result.stderr
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_params"]["model.n_head"] == 2
    assert results["best_value"] == pytest.approx(min(r["best_val_loss"] for r in records if r["status"] == "finished"))


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(text_file, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    result = run("train.py", "-m", *SWEEP, "dataset=text", f"data.path={text_file}", "model.n_head=3,2,4",
                 f"hydra.sweep.dir={sweep}", cwd=tmp_path, check=False)
    assert result.returncode == 1  # the sweep finished, and says that a job failed
    assert "2 of 3 runs finished" in result.stderr
    failed = job_dir(sweep, "model.n_head=3").name
    assert f"failed: {failed}: model.n_embd=32 is not divisible by model.n_head=3" in result.stderr
    number = failed.split("_")[0]  # jobs side by side: its line says which job it is, and its train.log has it
    assert f"[job {number}] error: model.n_embd=32 is not divisible" in result.stderr
    assert "error: model.n_embd=32 is not divisible" in (job_dir(sweep, "model.n_head=3") / "train.log").read_text()
    again = run("train.py", "-m", *SWEEP, "dataset=text", f"data.path={text_file}", "model.n_head=3,2,4",
                f"hydra.sweep.dir={sweep}", cwd=tmp_path, check=False)  # the same directory: its runs are kept
    assert again.returncode == 1 and again.stderr.strip() == (f"error: {sweep} already holds a sweep's runs: choose "
                                                               "another hydra.sweep.dir"), again.stderr
    rows = report_rows(capsys, sweep)
    number = {n: job_dir(sweep, f"model.n_head={n}").name.split("_")[0] for n in (3, 2, 4)}
    assert {name: cells[-1] for name, cells in rows.items()} == {
        number[3]: "failed", number[2]: "finished", number[4]: "finished"}


@pytest.mark.slow
def test_a_sweep_with_an_option_that_does_not_exist_is_hydras_own_message_before_any_job(text_file, tmp_path):
    sweep = tmp_path / "sweep"
    args = [a for a in SWEEP if not a.startswith("model=")]
    result = run("train.py", "-m", *args, "dataset=text", f"data.path={text_file}", "model=tiny,nosuch",
                 f"hydra.sweep.dir={sweep}", cwd=tmp_path, check=False)
    assert result.returncode == 1 and "Could not find 'model/nosuch'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not list(sweep.glob("*/status.json"))


def test_report_tells_a_killed_run_from_a_running_one(tmp_path, capsys):
    pids = {"gone": 999_999_999, "alive": os.getpid(), "zero": 0, "minus": -1, "huge": 10**20}  # (damaged records)
    for name, pid in pids.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "status.json").write_text(json.dumps(
            {"status": "running", "pid": pid, "host": socket.gethostname(), "overrides": [f"seed={pid}"]}))
    rows = report_rows(capsys, tmp_path)
    assert {name: rows[name][-1] for name in pids} == {**dict.fromkeys(pids, "killed"), "alive": "running"}


def test_the_report_replaces_links_planted_where_it_writes(tmp_path, capsys):
    """A directory received from someone else may hold report.md or val_loss.png as links to other files: the
    report replaces the links and leaves the files they point to alone."""
    sweep = tmp_path / "received"
    (sweep / "job").mkdir(parents=True)
    (sweep / "job" / "status.json").write_text(json.dumps({"status": "finished", "best_val_loss": 2.5, "steps": 3}))
    victims = {name: tmp_path / f"victim-{name}" for name in ("report.md", "val_loss.png")}
    for name, victim in victims.items():
        victim.write_text("mine")
        (sweep / name).symlink_to(victim)
    assert report_main([str(sweep), "--samples", "0"]) == 0
    capsys.readouterr()
    assert all(victim.read_text() == "mine" for victim in victims.values())
    assert not (sweep / "report.md").is_symlink() and "best val loss" in (sweep / "report.md").read_text()
    assert not (sweep / "val_loss.png").is_symlink() and (sweep / "val_loss.png").read_bytes()[:4] == b"\x89PNG"


def test_report_leaves_out_single_runs_that_never_trained_but_keeps_a_sweeps_failed_job(tmp_path, capsys):
    def record(run_dir: Path, **status) -> None:
        run_dir.mkdir(parents=True)
        (run_dir / "status.json").write_text(json.dumps(status))

    record(tmp_path / "runs" / "ok", status="finished", best_val_loss=2.5, steps=10)
    record(tmp_path / "runs" / "no_corpus", status="failed", error="corpus missing", training_started=False)
    record(tmp_path / "runs" / "nan", status="failed", error="nan", training_started=True)
    record(tmp_path / "sweep" / "n_head=3", status="failed", error="not divisible", training_started=False)
    (tmp_path / "sweep" / "n_head=3" / ".hydra").mkdir()  # as Hydra records a sweep's or a search's job
    (tmp_path / "sweep" / "n_head=3" / ".hydra" / "hydra.yaml").write_text("hydra:\n  mode: MULTIRUN\n  x: 1\n")
    assert report_main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "ok" in out and "nan" in out and "n_head=3" in out and "no_corpus" not in out
    assert "left out 1 single runs that failed before training" in err


def test_a_time_plot_names_the_runs_it_has_no_wall_times_for(tmp_path, capsys):
    run_dir = tmp_path / "csv_run"
    (run_dir / "csv").mkdir(parents=True)
    (run_dir / "status.json").write_text(json.dumps({"status": "finished", "best_val_loss": 2.5, "steps": 20}))
    (run_dir / "csv" / "metrics.csv").write_text("step,val/loss\n10,3.0\n20,2.5\n")
    assert report_main([str(run_dir), "--x", "time", "--samples", "0"]) == 0
    assert f"{run_dir}: no wall times (the csv logger keeps none): left out of the time plot" in capsys.readouterr().err


def test_report_shows_the_best_step_overfitting_samples_side_by_side_and_plots_against_time(
        trained_run, tmp_path, capsys):

    for name in ("a", "b"):
        shutil.copytree(trained_run, tmp_path / "runs" / name)
    assert report_main([str(tmp_path / "runs"), "--x", "time", "--samples", "40", "--prompt", "Snow"]) == 0
    out = capsys.readouterr().out
    header, _, *rows = [line for line in out.splitlines() if line.startswith("| ")]
    cells = [c.strip() for c in rows[0].strip("|").split(" | ")]
    columns = dict(zip([c.strip() for c in header.strip("|").split(" | ")], cells, strict=True))
    val = read_logs(trained_run)[0]["val/loss"]
    assert columns["best at step"] == str(min(val, key=lambda p: p[1])[0])
    assert columns["val rose after"] == ("yes" if val[-1][1] > min(v for _, v in val) * 1.01 else "no")
    assert float(columns["copied"]) >= 0
    samples = re.findall(r"### (\w)\n\n```\n(Snow[^`]*)\n```", out)
    assert [name for name, _ in samples] == ["a", "b"] and samples[0][1] == samples[1][1]  # same model, prompt, seed
    assert len(samples[0][1]) >= 40 and "prompt 'Snow', seed 0" in out
    assert imread(tmp_path / "runs" / "val_loss.png").shape[0] > 100


def test_the_reports_bad_arguments_are_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "status.json").write_text('{"status": "fini')  # cut off: a row, status unknown
    (tmp_path / "a_file").write_text("")
    for args, message in ((["--x", "wall"], "argument --x: invalid choice: 'wall'"),
                          (["--samples", "-5"], "--samples -5: give an integer >= 0 (0: no samples)"),
                          (["--seed", str(2**64)], f"--seed {2**64}: give an integer in [0, 2**32)"),
                          ([str(tmp_path / "run")], "several PATHs: give --out DIR, where report.md and val_loss.png"),
                          ([], "the following arguments are required: paths")):
        with pytest.raises(SystemExit) as exit_:
            report_main([str(tmp_path), *args] if args else [])
        err = capsys.readouterr().err
        assert exit_.value.code == 1 and err.count("\n") == 1 and err.startswith(f"error: {message}"), err
    assert report_main([str(tmp_path), "--out", str(tmp_path / "a_file"), "--samples", "0"]) == 1
    assert capsys.readouterr().err.strip() == (f"error: cannot create {tmp_path / 'a_file'}: a file is in the way: "
                                               "choose a writable directory with --out DIR")
    assert report_main([str(tmp_path), str(tmp_path / "run"), "--out", str(tmp_path), "--samples", "0"]) == 0  # twice
    rows = [line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| run | (")]
    assert len(rows) == 1 and rows[0].rstrip(" |").endswith("unknown"), rows


@pytest.mark.parametrize("reader", ["gone", "/dev/full"])
def test_the_reports_standard_output_failing(tmp_path, reader):
    """A reader that went away (| head) ends it quietly, its report written; a full disk behind > FILE is one line."""
    import subprocess
    import sys

    from conftest import ROOT

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "status.json").write_text('{"status": "finished"}')
    command = [sys.executable, "-m", "frosty_lm.report", str(tmp_path / "run"), "--samples", "0"]
    if reader == "gone":
        read_end, write_end = os.pipe()
        os.close(read_end)
        done = subprocess.run(command, cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
        os.close(write_end)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert (tmp_path / "run" / "report.md").is_file()
    else:
        with open(reader, "w") as out:
            done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.PIPE, text=True, timeout=120)
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [  # its files are written: it says so
            f"wrote {tmp_path / 'run' / 'report.md'} and {tmp_path / 'run' / 'val_loss.png'}",
            "error: cannot write to standard output: No space left on device: send it to another file or disk"]


def test_a_run_reported_from_inside_is_named(tmp_path, capsys, monkeypatch):
    (tmp_path / "poem-run").mkdir()
    (tmp_path / "poem-run" / "status.json").write_text('{"status": "finished"}')
    monkeypatch.chdir(tmp_path / "poem-run")
    assert report_main([".", "--samples", "0"]) == 0
    assert "| poem-run | (defaults) |" in capsys.readouterr().out


def test_report_of_a_path_without_runs(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 1
    assert "no runs" in capsys.readouterr().err


def test_sweep_jobs_are_named_by_their_number_and_overrides():
    """hydra.sweep.subdir: N_ and Hydra's override_dirname, less the keys that are paths, presets or display sizes."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(Path(__file__).parents[1] / "conf")):
        cfg = compose("train", overrides=["+sweep=dropout_depth", "model.dropout=0.2", "data.path=/a/b.txt",
                                          "model=tiny", "callbacks.copied.chars=100"], return_hydra_config=True)
        assert cfg.hydra.job.override_dirname == "model.dropout=0.2,model=tiny"
        cfg.hydra.job.num = 3  # (the launcher's)
        assert cfg.hydra.sweep.subdir == "3_model.dropout=0.2,model=tiny"
        cfg = compose("train", overrides=["callbacks.sample_text.prompt=a/b"], return_hydra_config=True)
        cfg.hydra.job.num = 3
        assert cfg.hydra.sweep.subdir == "3_callbacks.sample_text.prompt=a_b"  # one directory, not a/ and b
        cfg = compose("train", overrides=["model.dropout=0.2", "hydra.sweep.subdir=${hydra.job.num}"],
                      return_hydra_config=True)  # the fix for names over 255 bytes (docs/experiments.md)
        cfg.hydra.job.num = 3
        assert cfg.hydra.sweep.subdir == "3"
        for search in ("optuna", "speedrun"):  # a search's trials by number: sampled values print long
            cfg = compose("train", overrides=[f"+search={search}"], return_hydra_config=True)
            cfg.hydra.job.num = 3
            assert cfg.hydra.sweep.subdir == "3"


def test_report_of_records_and_metrics_of_the_wrong_shape_shows_what_it_can(tmp_path, capsys):
    """Valid JSON or csv, but not what train.py writes: no traceback; the unknown fields blank, the status unknown."""
    records = {"list": [1, 2], "text": "finished", "types": {"status": 3, "best_val_loss": "abc", "steps": [1],
               "num_params": "many", "wall_time_s": None, "overrides": "seed=1", "pid": "x", "host": 5}}
    metrics = {"list": "val/loss,epoch\n2.5,0\n",  # no step column
               "text": "step,val/loss\n10,abc\nten,2.0\n20,2.5,9\n",  # not numbers, and a row too long
               "types": "step,val/loss\n10,2.5\n"}
    for name, record in records.items():
        (tmp_path / name / "csv").mkdir(parents=True)
        (tmp_path / name / "status.json").write_text(json.dumps(record))
        (tmp_path / name / "csv" / "metrics.csv").write_text(metrics[name])
    rows = report_rows(capsys, tmp_path)
    assert {name: row[-1] for name, row in rows.items()} == {"list": "unknown", "text": "unknown", "types": "unknown"}
    assert rows["types"][6] == "2.5000" and rows["types"][3] == "10"  # the best val loss and steps from metrics.csv
    assert rows["text"][6] == "2.5000"


def test_report_of_a_received_run_with_special_files_neither_blocks_nor_fails(tmp_path, capsys):
    """FIFOs where records should be (reading one would block forever) and a record nested too deep for the JSON
    parser: each run keeps its row, status unknown."""
    def give_up(signum, frame):
        raise TimeoutError("the report blocked on a special file")

    for name in ("fifo", "deep"):
        (tmp_path / name / "csv").mkdir(parents=True)
    os.mkfifo(tmp_path / "fifo" / "status.json")
    os.mkfifo(tmp_path / "fifo" / "csv" / "metrics.csv")
    os.mkfifo(tmp_path / "fifo" / "events.out.tfevents.1.host")
    (tmp_path / "deep" / "status.json").write_text("[" * 100_000 + "]" * 100_000)
    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(60)
    try:
        rows = report_rows(capsys, tmp_path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert {name: row[-1] for name, row in rows.items()} == {"fifo": "unknown", "deep": "unknown"}


def test_a_directory_where_the_report_writes_is_one_line_and_leaves_nothing_behind(tmp_path, capsys):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "status.json").write_text(json.dumps({"status": "finished", "best_val_loss": 2.5}))
    for name in ("report.md", "val_loss.png"):
        (tmp_path / name).mkdir()
        assert report_main([str(tmp_path), "--samples", "0"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot write {tmp_path / name}: Is a directory: remove what is in the way")
        assert not list(tmp_path.glob(".*")) and (tmp_path / name).is_dir()  # no temporary file left behind
        (tmp_path / name).rmdir()


def test_a_full_disk_keeps_the_earlier_report_whole(tmp_path, capsys, monkeypatch):
    import frosty_lm.cli

    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "status.json").write_text(json.dumps({"status": "finished", "best_val_loss": 2.5}))
    (tmp_path / "report.md").write_text("the earlier report")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(frosty_lm.cli.os, "fsync", full)
    assert report_main([str(tmp_path), "--samples", "0"]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot write {tmp_path / 'report.md'}: No space left on device")
    assert (tmp_path / "report.md").read_text() == "the earlier report" and not list(tmp_path.glob(".*"))


def test_a_resumed_csv_run_keeps_its_earlier_metrics(invoke, text_file, tmp_path):
    """Lightning's CSVLogger clears a metrics.csv it writes again: each part of a run has its own version_N, and the
    report reads them as one."""
    from frosty_lm.report import read_logs

    run = tmp_path / "r"
    common = [*TINY, "logger=csv", "dataset=text", f"data.path={text_file}"]
    assert invoke("train.py", *common, f"hydra.run.dir={run}")[0] == 0
    code, _, err = invoke("train.py", f"resume={run}", "trainer.max_steps=45")
    assert code == 0, err
    assert sorted(p.parent.name for p in run.glob("csv/*/metrics.csv")) == ["version_0", "version_1"]
    assert [step for step, _ in read_logs(run)[0]["val/loss"]] == [15, 30, 45]


def test_the_sweep_summary_finds_jobs_at_any_depth(tmp_path, monkeypatch):
    """hydra.sweep.subdir may nest a sweep's job directories: each job counts, a failed one too."""
    from omegaconf import OmegaConf

    from frosty_lm import status
    from frosty_lm.status import SweepSummary

    said = []
    monkeypatch.setattr(status, "say", said.append)

    for job, record in (("0/3", {"status": "failed", "error": "not divisible"}), ("1/2", {"status": "finished"})):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / "status.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit) as exit_:
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    err = "\n".join(said)
    assert exit_.value.code == 1 and f"sweep {tmp_path}: 1 of 2 runs finished, 1 failed" in err
    assert "failed: 0/3: not divisible" in err
    assert "compare them with: python -m frosty_lm.report" in err
    for job in ("0/3", "1/2"):  # jobs that failed before training wrote no status.json: nothing for the report
        (tmp_path / job / "status.json").unlink()
    said.clear()
    with pytest.raises(SystemExit):
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert said[0] == f"sweep {tmp_path}: 0 of 2 runs finished, 2 failed"
    assert "failed: 0/3: before training: see its train.log" in said  # nothing in its log says more
    (tmp_path / "1/2/train.log").write_text("[2026-12-07 10:00:00,000][frosty][INFO] - torch threads: 2\n"
                                            "[2026-12-07 10:00:01,000][frosty][ERROR] - error: resume=latest "
                                            "continues one run: give it without -m\n")
    said.clear()
    with pytest.raises(SystemExit):
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert "failed: 1/2: resume=latest continues one run: give it without -m" in said  # the line its log has


def test_a_sweep_of_zero_jobs_at_a_time_is_one_line_before_any_job(invoke, tmp_path):
    code, _, err = invoke("train.py", "-m", "hydra.launcher.n_jobs=0", "seed=1,2", f"hydra.sweep.dir={tmp_path}")
    assert code == 1 and err.strip() == ("error: hydra.launcher.n_jobs=0 must be the number of jobs at a time (1, "
                                         "2, ...), or -1 for one per core")
    assert not list(tmp_path.iterdir())


def test_resume_in_a_sweep_is_one_line_for_its_job(invoke, tmp_path):
    code, _, err = invoke("train.py", "-m", "hydra/launcher=basic", "resume=latest", "trainer.max_steps=40,50",
                          f"paths.outputs_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code == 1 and "Traceback" not in err
    assert err.count("error: resume=latest continues one run: give it without -m") == 2, err
    job = next((tmp_path / "sweep").glob("0_*"))  # its train.log has the line, for the summary
    assert "error: resume=latest continues one run" in (job / "train.log").read_text()
