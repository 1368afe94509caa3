"""The model's code imports nothing of the command line and the runs: no Hydra, no run directories, no run record,
no training loop. One fresh interpreter imports each module in turn (torch takes seconds to import) and, after each,
looks at what is loaded: the first module that brings one in is named."""
import subprocess
import sys

from conftest import ROOT

MODEL_CODE = ["config", "corpus", "model", "generation", "optim", "data", "lit_module", "checkpoint"]
COMMAND_LINE = ["hydra", "frosty_lm.cli", "frosty_lm.run_dirs", "frosty_lm.status", "train",
                "frosty_lm.progress"]


def test_the_model_code_imports_nothing_of_the_command_line():
    code = f"""
import importlib, sys
for name in {MODEL_CODE!r}:
    importlib.import_module("frosty_lm." + name)
    loaded = [module for module in {COMMAND_LINE!r} if module in sys.modules]
    if loaded:
        sys.exit(f"frosty_lm.{{name}} imports {{', '.join(loaded)}}")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_sampling_tools_import_no_lightning():
    """generate.py's modules and the attention tool read checkpoints with torch alone: Lightning's import is most of a
    start (docs/performance.md)."""
    code = """
import importlib, sys
for name in ("frosty_lm.checkpoint", "frosty_lm.generation", "frosty_lm.attention"):
    importlib.import_module(name)
    if "lightning" in sys.modules:
        sys.exit(f"{name} imports lightning")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
