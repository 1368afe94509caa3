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
