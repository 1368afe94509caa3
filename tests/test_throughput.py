"""The throughput estimate in the training log: the machine's matmul peak and the precision's compute dtype."""
import pytest
import torch

from frosty_lm.callbacks import compute_dtype, matmul_peak


def test_matmul_peak_is_plausible_and_leaves_the_training_random_stream_alone():
    state = torch.get_rng_state()
    peak = matmul_peak(torch.float32, n=256)
    assert 1e8 < peak < 1e14  # FLOP/s: more than a tenth of a GFLOP/s, less than 100 TFLOP/s on a CPU
    assert torch.equal(torch.get_rng_state(), state)  # dropout's stream, and so resumed runs, are unchanged


@pytest.mark.parametrize("precision, dtype", [("32-true", torch.float32), ("32", torch.float32),
                                              ("bf16-mixed", torch.bfloat16), ("bf16-true", torch.bfloat16),
                                              ("16-mixed", torch.float16)])
def test_compute_dtype_follows_the_precision(precision, dtype):
    assert compute_dtype(precision) == dtype
