"""Frosty uses Lightning, Hydra and TensorBoard through their public APIs only, so that a release within the ranges
pyproject.toml allows cannot break it unannounced: no name starting with _ imported from them, no module of
theirs named _internal, no _attribute of another object read, no private method or attribute of theirs overridden
or used by a subclass."""
import ast
import importlib
import inspect
import re

from conftest import ROOT

LIBRARIES = ("lightning", "lightning_fabric", "pytorch_lightning", "hydra", "tensorboard")
SOURCES = [*sorted((ROOT / "frosty_lm").glob("*.py")), ROOT / "train.py", ROOT / "generate.py",
           *sorted((ROOT / "bench").glob("*.py"))]
# private-looking names of others that the code may use: os._exit (documented: exits without cleanup) and
# torch.optim.Muon's orthogonalisation (frosty_lm/optim.py says why); a namedtuple's public methods
ALLOWED = {"os._exit", "torch_muon._zeropower_via_newtonschulz"}
NAMEDTUPLE = {"_replace", "_asdict", "_fields", "_make"}


def private(name: str) -> bool:
    """_name; not __dunder__ nor Hydra's _target_-style keys."""
    return name.startswith("_") and not name.endswith("_")


def private_uses(source: str) -> list[str]:
    """Lines that import a private name or module of the libraries, or read an _attribute of anything but self or
    cls (super() included)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
            ours = [m for m in modules if m.split(".")[0] in LIBRARIES]
            if ours and (any(private(part) for m in ours for part in m.split(".")) or any(map(private, names))):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in NAMEDTUPLE \
                and ast.unparse(node) not in ALLOWED:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_private_name_of_lightning_hydra_or_tensorboard_is_imported_or_read():
    found = [f"{path.relative_to(ROOT)}:{use}" for path in SOURCES for use in private_uses(path.read_text())]
    assert not found, found
    text = "\n".join(path.read_text() for path in SOURCES)
    for pattern in (r"_internal\b", r"super\(\)\._[a-z]", r"\._get_file_writer", r"from (lightning|hydra)\S* import _"):
        assert not re.search(pattern, text), pattern


def test_the_checks_find_what_they_are_for():
    assert private_uses("from lightning.pytorch.callbacks.throughput_monitor import _plugin_to_compute_dtype")
    assert private_uses("import hydra._internal.utils")
    assert private_uses("from hydra._internal.utils import get_args_parser")
    assert private_uses("d = timer._duration")
    assert private_uses("super()._save_last_checkpoint(trainer, candidates)")
    assert private_uses("trainer._logger_connector.log_metrics(metrics)")
    assert not private_uses("self._previous = None\nfrom lightning.pytorch.callbacks import Timer\nos._exit(1)")


def library_privates(cls: type) -> set[str]:
    """The private names that the library classes among cls's bases define or set on self."""
    names = set()
    for base in cls.__mro__[1:]:
        if base.__module__.split(".")[0] in LIBRARIES:
            names |= {name for name in vars(base) if private(name)}
            names |= {name for name in re.findall(r"\bself\.(_\w+)", inspect.getsource(base)) if private(name)}
    return names - {"_abc_impl"}  # every abstract base class's, set by ABCMeta


def test_no_subclass_overrides_or_uses_a_private_name_of_its_library_bases():
    """e.g. an override of ModelCheckpoint._save_last_checkpoint, or self._trainer in a LightningModule."""
    clashes = []
    for path in sorted((ROOT / "frosty_lm").glob("*.py")):
        module = importlib.import_module(f"frosty_lm.{path.stem}")
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            theirs = library_privates(cls)
            ours = {name for name in vars(cls) if private(name)}
            ours |= {name for name in re.findall(r"\bself\.(_\w+)", inspect.getsource(cls)) if private(name)}
            clashes += [f"{cls.__name__}.{name}" for name in sorted(ours & theirs)]
    assert not clashes, clashes
