import pytest

from frosty_lm.errors import FrostyError
from frosty_lm.schedule import lr_lambda


def test_cosine_warms_up_then_decays_to_the_floor():
    f = lr_lambda("cosine", warmup_steps=10, decay_steps=110, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55)
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)


def test_short_runs_warm_up_for_at_most_half_of_the_decay():
    f = lr_lambda("cosine", warmup_steps=100, decay_steps=30)
    assert f(14) == pytest.approx(1.0) and f(29) < 0.2


def test_constant_and_bad_names():
    assert [lr_lambda("constant")(s) for s in (0, 10_000)] == [1.0, 1.0]
    with pytest.raises(FrostyError, match="use constant or cosine"):
        lr_lambda("linear")
