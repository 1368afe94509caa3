"""Learning-rate schedules: by step, and by the share of a time budget (trainer.max_time) spent."""
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TINY
from frosty_lm.optim import lr_lambda, timed

# a tiny run limited by its time budget alone, every step's lr logged; no warm-up, so that a schedule by steps
# would keep the lr near 1e-3 all along
TIMED = [*TINY, "trainer.max_steps=100000", "trainer.val_check_interval=100000", "trainer.log_every_n_steps=1",
         "scheduler=cosine", "scheduler.warmup_steps=0", "optim.lr=1e-3", "dataset=text"]


def test_cosine_warms_up_then_decays_to_the_floor():
    f = lr_lambda("cosine", warmup_steps=10, decay_steps=110, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55)
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)


def test_short_runs_warm_up_for_at_most_half_of_the_decay():
    f = lr_lambda("cosine", warmup_steps=100, decay_steps=30)
    assert f(14) == pytest.approx(1.0) and f(29) < 0.2


def test_constant_is_one_after_the_warm_up():
    assert [lr_lambda("constant")(s) for s in (0, 10_000)] == [1.0, 1.0]


def test_a_time_budget_moves_the_schedule_by_the_larger_share_spent():
    """timed: the schedule at the steps done, or the share of max_time spent in steps of max_steps, if further."""
    def at(step, elapsed):  # where timed puts a schedule that returns its position
        return timed(lambda _, position: position, 1000, 60.0, lambda: elapsed)(step)
    assert at(10, 0.0) == 10  # the step itself, an int
    assert at(10, 30.0) == pytest.approx(500)
    assert at(900, 30.0) == 900  # steps ahead of time
    assert at(10, 90.0) == pytest.approx(1500)


def test_a_timed_cosine_warms_up_by_steps_and_decays_with_the_clock():
    """A fake clock: the decay follows the share of the 60 s budget spent while the steps lag behind; the warm-up
    counts steps, but ends by half the budget at the latest."""
    now = [0.0]
    f = timed(lr_lambda("cosine", warmup_steps=100, decay_steps=1000, min_lr_ratio=0.1), max_steps=1000,
              max_time=60.0, clock=lambda: now[0])
    assert f(0) == pytest.approx(0.01)  # the first step of the warm-up, as by steps
    now[0] = 3.0  # 5% of the budget, 3 steps: still warming up, on a ramp over half the budget (51 / 500)
    assert f(3) == pytest.approx(0.102)
    assert f(30) == pytest.approx(0.31)  # by steps, where they are ahead of that ramp
    now[0] = 6.0 + 27.0  # past the warm-up's 100 steps of 1000 in time, then half of the decay
    assert f(40) == pytest.approx(0.55)  # half the budget spent: the warm-up is over, whatever the steps
    now[0] = 60.0  # the budget spent: the floor, however few steps were done
    assert f(200) == pytest.approx(0.1)
    now[0] = 120.0
    assert f(200) == pytest.approx(0.1)


def test_a_timed_warm_up_survives_a_lifted_max_steps():
    """max_steps far above what the time allows (a run meant to stop by time): the warm-up still takes its 100 steps,
    and the decay still follows the clock."""
    now = [0.6]  # 1% of the budget
    f = timed(lr_lambda("cosine", warmup_steps=100, decay_steps=1_000_000, min_lr_ratio=0.1), max_steps=1_000_000,
              max_time=60.0, clock=lambda: now[0])
    assert f(10) == pytest.approx(0.11)
    now[0] = 30.0
    assert f(500) == pytest.approx(0.55, abs=1e-3)
    now[0] = 60.0
    assert f(900) == pytest.approx(0.1)


def test_without_time_ahead_a_timed_schedule_is_the_step_schedule_exactly():
    step_factor = lr_lambda("cosine", warmup_steps=10, decay_steps=100, min_lr_ratio=0.1)
    f = timed(step_factor, max_steps=100, max_time=1e9, clock=lambda: 1.0)
    assert [f(s) for s in range(1, 120)] == [step_factor(s) for s in range(1, 120)]  # the same floats


def test_a_warm_up_between_steps_does_not_overshoot():
    f = lr_lambda("cosine", warmup_steps=10, decay_steps=100)
    assert f(9.5) == 1.0 and f(4.5) == pytest.approx(0.55)


def last_logged_lrs(run_dir) -> list:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("train/lr")]


@pytest.mark.slow
def test_a_run_limited_by_time_warms_up_by_steps_and_ends_at_the_schedules_floor(invoke, text_file, tmp_path):
    """trainer.max_time=4 s with trainer.max_steps=100000: a cosine laid out over the steps would barely have left
    its warm-up; laid out over the time budget, the lr ends at min_lr_ratio * optim.lr. The warm-up takes its 10
    steps, however far max_steps is lifted."""
    run_dir = tmp_path / "r"
    overrides = [o for o in TIMED if not o.startswith("scheduler.warmup_steps")] + ["scheduler.warmup_steps=10"]
    code, _, err = invoke("train.py", *overrides, f"data.path={text_file}", "trainer.max_time=00:00:00:04",
                          f"hydra.run.dir={run_dir}")
    assert code == 0, err
    ckpt = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert 0 < ckpt["global_step"] < 100_000
    assert ckpt["callbacks"]["Timer"]["time_elapsed"]["train"] >= 4
    lrs = [g["lr"] for g in ckpt["optimizer_states"][0]["param_groups"]]
    assert lrs == pytest.approx([1e-4, 1e-4], rel=0.05)  # 0.1 x 1e-3: the floor
    logged = last_logged_lrs(run_dir)  # each step's lr, set after the step before it
    assert logged[-1][0] == ckpt["global_step"] and logged[-1][1] < 0.3e-3  # the last step's: near the floor
    assert logged[0] == (1, pytest.approx(1e-4, rel=0.05))  # the warm-up's first step: 1 / 10 of optim.lr
    warm_up = [lr for _, lr in logged[:5]]  # up by steps, or further if the steps are slow: the warm-up ends by half
    assert all(lr >= 0.95e-4 * (i + 1) for i, lr in enumerate(warm_up)), warm_up  # the budget at the latest (a
    assert warm_up == sorted(warm_up) and warm_up[1] < 0.9e-3, warm_up  # loaded machine's slow steps)
    assert all(a[1] >= b[1] for a, b in zip(logged[10:], logged[11:]))  # then down all along


@pytest.mark.slow
def test_a_resumed_time_budget_goes_on_from_the_time_spent(invoke, text_file, tmp_path):
    """Stopped when its 2 s budget was spent (the Timer counts the validation at the stop too: more than 2 s), then
    given 4 s more: the resumed run starts where the time spent left its cosine (the Timer's time is in the
    checkpoint), not at the top, and ends at the floor."""
    run_dir = tmp_path / "r"
    assert invoke("train.py", *TIMED, f"data.path={text_file}", "trainer.max_time=00:00:00:02",
                  f"hydra.run.dir={run_dir}")[0] == 0
    first = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    spent = first["callbacks"]["Timer"]["time_elapsed"]["train"]
    assert first["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-4, rel=0.05)
    budget = math.ceil(spent) + 4
    code, _, err = invoke("train.py", f"resume={run_dir}", f"trainer.max_time=00:00:00:{budget:02d}")
    assert code == 0, err
    last = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] > first["global_step"]
    assert last["callbacks"]["Timer"]["time_elapsed"]["train"] >= budget
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-4, rel=0.05)
    resumed = [(s, lr) for s, lr in last_logged_lrs(run_dir) if s > first["global_step"]]
    def lr_after(seconds: float) -> float:
        return 1e-3 * lr_lambda("cosine", decay_steps=100_000)(seconds / budget * 100_000)

    assert resumed[0][0] == first["global_step"] + 1
    # where the time spent had left the schedule, and the moments of the resumed run's start (callbacks measuring)
    assert lr_after(spent + 1.5) <= resumed[0][1] <= lr_after(spent)
    assert resumed[0][1] < 0.9e-3  # a run that started its schedule again would be near 1e-3
