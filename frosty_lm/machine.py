"""The machine a run trains on: its CPU precision (and the line that says why), its memory and whether training
fits in it, and the one line for a disk or memory error. Neither Hydra nor torch at import: resolving a config
calls it before torch loads."""
from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

from frosty_lm.config import FrostyError, GPTConfig

if TYPE_CHECKING:  # torch takes seconds to import: the functions that use it import it
    from omegaconf import DictConfig

NATIVE_BF16 = ("avx512_bf16", "amx_tile")  # the flags torch's own bf16 checks read
BELOW_BF16 = {  # values of torch's and oneDNN's instruction-set caps that are below native bf16
    "ATEN_CPU_CAPABILITY": {"default", "avx2"},
    "ONEDNN_MAX_CPU_ISA": {"sse41", "avx", "avx2", "avx2_vnni", "avx512_core", "avx512_core_vnni"},
}


def cpu_precision() -> str:
    """trainer=cpu's precision: bf16 autocast where the CPU computes it natively (its flags in /proc/cpuinfo),
    faster to the same loss (docs/performance.md); else fp32."""
    flags = cpu_flags()
    native_bf16 = flags is not None and any(flag in flags for flag in NATIVE_BF16) and isa_cap() is None
    return "bf16-mixed" if native_bf16 else "32-true"


def isa_cap() -> str | None:
    """`NAME=value` when an environment variable caps torch's CPU kernels below native bf16 (e.g. to measure an
    AVX2-only CPU on one with AMX, where bf16 would be emulated: trainer=cpu then trains in fp32); else None."""
    for name, below in BELOW_BF16.items():
        if os.environ.get(name, "").lower() in below:
            return f"{name}={os.environ[name]}"
    return None


def precision_line(cfg: DictConfig, precision: str) -> str:
    """The training precision and why: trainer=cpu picks bf16 where the CPU computes it natively."""
    from omegaconf import OmegaConf

    chosen = OmegaConf.to_container(cfg.trainer, resolve=False).get("precision")
    if isinstance(chosen, str) and "frosty_cpu_precision" in chosen:
        if precision.startswith("bf16"):
            return f"{precision}: this CPU computes bf16 natively (AVX512-BF16 or AMX); weights stay fp32"
        if (cap := isa_cap()) is not None:
            return f"fp32 ({precision}): {cap} caps torch's CPU kernels below native bf16"
        return (f"fp32 ({precision}): this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 would be slower; "
                "expect several times the time per step of such a CPU")
    return f"{precision}: as trainer.precision sets it"


def cpu_flags() -> set[str] | None:  # /proc/cpuinfo's flags (none outside x86); None without it (not Linux: fp32)
    try:
        with open("/proc/cpuinfo") as f:
            return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return None


def available_memory() -> int | None:
    """Bytes this process can allocate now, or None if unknown: the least of Linux's MemAvailable, the room left
    under its cgroup's memory limit (a container, a batch job) and under its address-space limit (ulimit -v)."""
    import resource

    found = [meminfo("/proc/meminfo", "MemAvailable:")]
    limit, used = read_number("/sys/fs/cgroup/memory.max"), read_number("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        found.append(limit - used)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    size = meminfo("/proc/self/status", "VmSize:")
    if soft != resource.RLIM_INFINITY and size is not None:
        found.append(soft - size)
    known = [room for room in found if room is not None]
    return max(0, min(known)) if known else None


def meminfo(path: str, field: str) -> int | None:  # a `Field: N kB` line of a /proc file, in bytes
    try:
        with open(path) as f:
            return next((int(line.split()[1]) * 1024 for line in f if line.startswith(field)), None)
    except (OSError, ValueError, IndexError):
        return None


def read_number(path: str) -> int | None:  # a file's one integer; None for a cgroup's memory.max of `max` (no limit)
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def training_memory(n_params: int, batch_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                    vocab_size: int, processes: int = 1) -> int:
    """A rough estimate, in bytes, of what training takes beyond the libraries: fp32 weights, gradients and AdamW's
    two moments (16 bytes a parameter); the activations kept for the backward pass (~24 numbers per channel and
    position in a layer, and the attention scores); the logits and their gradient."""
    B, T, C = batch_size, block_size, n_embd
    activations = n_layer * 4 * (24 * B * T * C + B * n_head * T * T)
    return processes * (16 * n_params + activations + 4 * 3 * B * T * vocab_size)


def gpu_free_memory() -> int | None:
    import torch

    return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None


def check_gpu_present(accelerator: str | None) -> None:
    """A GPU trainer where torch sees no GPU (CUDA, or Apple's MPS): an error that names the fix (Lightning's, "No
    supported gpu backend found!", names none)."""
    if accelerator not in ("gpu", "cuda"):
        return
    import torch

    if not (torch.cuda.is_available() or (accelerator == "gpu" and torch.backends.mps.is_available())):
        raise FrostyError(f"trainer.accelerator={accelerator} (trainer=gpu and trainer=ddp), but torch sees no GPU "
                          "here: train on the CPU with trainer=cpu (the default), or on a machine with a GPU and a "
                          "CUDA build of torch")


def check_training_fits(cfg: GPTConfig, batch_size: int, processes: int = 1, gpu: bool = False) -> None:
    """Refuses training that would not fit in this machine's memory, in `processes` processes (gpu: on the GPU,
    one per process), before the model is built. The estimate is fp32's: under bf16 autocast activations take less."""
    import torch

    from frosty_lm.model import build

    # the model's size without its memory (the meta device), from one block and two: the blocks are alike, and a
    # deep model takes long to build even there
    with torch.device("meta"):
        one, two = (build(dataclasses.replace(cfg, n_layer=n)).num_params() for n in (1, 2))
    n_params = one + (cfg.n_layer - 1) * (two - one)
    copies = 1 if gpu else processes
    layers = cfg.n_layer if cfg.kind == "gpt" else 0  # a bigram model has no blocks
    needed = training_memory(n_params, batch_size, cfg.block_size, layers, cfg.n_head, cfg.n_embd, cfg.vocab_size,
                             copies)
    mostly_weights = 2 * 16 * n_params * copies > needed  # weights, gradients and AdamW's state: over half
    fix = ("choose a smaller model (model.n_embd, model.n_layer): its weights, gradients and AdamW's state take most "
           "of it" if mostly_weights else "lower data.batch_size, model.block_size or model.n_layer")
    check_fits(needed, f"training (batch {batch_size} x {cfg.block_size} characters, {n_params:,} parameters)", fix,
               gpu)


def check_fits(needed: int, what: str, fix: str, gpu: bool = False) -> None:
    """A FrostyError, with the numbers, if `needed` bytes exceed the memory available now (gpu: on the GPU)."""
    available = gpu_free_memory() if gpu else available_memory()
    if available is not None and needed > available:
        where = "the GPU has" if gpu else "this machine has"
        raise FrostyError(f"{what} needs about {size(needed)} of memory, and {where} {size(available)} available: "
                          f"{fix}")


def size(n: int) -> str:  # 3.2 GiB; below one, 512 MiB
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


ELSEWHERE = "free some space, or put runs on another disk with paths.outputs_dir=DIR"
FILE_ERRORS = {
    errno.ENOSPC: ("no space left on the device", ELSEWHERE),
    errno.EDQUOT: ("disk quota exceeded", ELSEWHERE),
    errno.EACCES: ("permission denied", "choose files and directories you may use (paths.outputs_dir=DIR for runs)"),
    errno.EPERM: ("operation not permitted", "choose files and directories you may use (paths.outputs_dir=DIR)"),
    errno.EROFS: ("read-only file system", "put runs on a writable disk with paths.outputs_dir=DIR"),
    errno.EEXIST: ("a file is in the way", "move it, or put runs elsewhere with paths.outputs_dir=DIR"),
    errno.EISDIR: ("a directory is in the way", "move it, or put runs elsewhere with paths.outputs_dir=DIR"),
    errno.ENOTDIR: ("not a directory", "move the file in the way, or put runs elsewhere with paths.outputs_dir=DIR"),
    errno.EFBIG: ("file too large (for the file system, or a limit such as ulimit -f)", ELSEWHERE),
}


def error_line(err: BaseException) -> str | None:
    """One line for an error down to the file system or memory, however deep in the exception chain; else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in FILE_ERRORS:
            what, fix = FILE_ERRORS[err.errno]  # (a rename names its target second)
            return f"{what}{f': {os.fsdecode(name)}' if (name := err.filename2 or err.filename) else ''}: {fix}"
        if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or any(  # torch's: CPU, GPU
                words in str(err) for words in ("can't allocate memory", "failed to map segment")):  # (a library's)
            return ("out of memory (the machine's, or a limit such as ulimit -v or a container's): give it more; in "
                    "training, lower data.batch_size, model.block_size or the model's size (the checkpoints written "
                    "before it are kept)")
        err = err.__cause__ or err.__context__
    return None
