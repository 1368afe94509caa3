"""The command line's key=value arguments, read and composed as Hydra will before it acts on them, so that the
mistakes people make most (a misspelt setting, an option that does not exist) are one line that names the fix
instead of Hydra's report of several lines, which would also suggest `+key=...`: a new key that nothing reads."""
from __future__ import annotations

import difflib
import re
import sys

from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from frosty_lm.errors import FrostyError
from frosty_lm.stored_config import CONF

SWEEP_FLAGS = {"-m", "--multirun", "hydra.mode=MULTIRUN"}


def read_overrides(argv: list[str]) -> dict:
    """The command line's key=value arguments as Hydra reads them, {key: value} (none in a sweep, -m: its jobs get
    theirs from the sweeper). A FrostyError for one that Hydra cannot read as one value (its own report takes
    several lines): characters its grammar takes only quoted (prompt=☃), or several values outside a sweep (a=1,2)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    sweeping = bool(SWEEP_FLAGS & set(argv))
    searching = any(a.startswith("+search=") for a in argv)  # a search preset (conf/search/)
    values = {}
    for arg in given(argv):
        key = arg.split("=", 1)[0]
        example = f"e.g. '{key}=\"...\"' (quoted for the shell and for Hydra)"
        try:
            override = parser.parse_override(arg)
        except HydraException:
            raise FrostyError(f"cannot read {arg}: quote a value with characters beyond letters, digits and "
                              f"punctuation such as ./:-_, {example}") from None
        if sweeping and override.key_or_group == "resume" and override.value() not in (None, ""):
            raise FrostyError(f"{arg}: resume= continues one run in its own directory, and a sweep (-m) starts new "
                              "runs: leave out -m, and resume each run with its own command")
        if override.key_or_group == "hydra/sweeper/sampler" and override.value() == "grid" and searching:
            raise FrostyError(f"{arg}: Optuna's grid sampler takes no seed, which the search presets give their "
                              "sampler; a grid is a plain sweep, -m with each setting's values: e.g. python train.py "
                              "-m model.n_layer=2,4,6 model.dropout=0.0,0.2")
        if override.is_sweep_override():
            if not sweeping:
                raise FrostyError(f"{arg} gives several values: add -m to run a job for each, or, for one text with "
                                  f"commas, quote it, {example}")
        else:
            values[override.key_or_group] = override.value()
    return {} if sweeping else values


def command_arg(key: str, value, quoted: bool = False) -> str:
    """key=value as a printed command must give it for the shell and for Hydra to read value back as it is: a value
    Hydra's grammar does not take bare (a sweep job's directory, dropout=0.2; a prompt with commas), or any value
    if quoted, goes in Hydra's double quotes; then the whole argument is quoted for the shell."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    text = str(value)
    try:
        bare = OverridesParser.create().parse_override(f"{key}={text}").value() == text
    except HydraException:
        bare = False
    if quoted or not bare:  # in Hydra's quotes a backslash is itself, but doubled before a quote (or the last one)
        text = re.sub(r'(\\*)"', lambda m: m.group(1) * 2 + '\\"', re.sub(r"(\\+)$", r"\1\1", text))
        text = f'"{text}"'
    return shlex.quote(f"{key}={text}")


def given(argv: list[str]) -> list[str]:
    """The key=value arguments: not -m, --cfg job, --config-dir=... (Hydra's own flags)."""
    return [a for a in argv if "=" in a and not a.startswith("-")]


def read_command_line(argv: list[str], config_name: str) -> dict:
    """read_overrides(argv), after check_composes: the arguments as Hydra reads them, each known to compose."""
    values = read_overrides(argv)
    check_composes(argv, config_name)
    return values


def hydra_flags(argv: list[str]) -> bool:
    """Whether the command line has flags of Hydra's other than -m (--cfg, --config-dir, --help, ...), which may
    compose another config, or none."""
    return any(a.startswith("-") and a not in SWEEP_FLAGS for a in argv)


def skip_hydra_mode_probe() -> None:
    """Spare each command one of its compositions of the config (docs/testing.md):
    before it runs, Hydra composes the whole config once only to read hydra.mode (Hydra.get_mode), which conf/
    never sets (test_configs checks every preset). So the mode is the command line's, and Hydra's probe runs only
    for a command line that names hydra.mode, or hydra.searchpath or flags of Hydra's, which may add other configs.
    Hydra is pinned (pyproject.toml), so this private method is the one this was written against. Calling it again
    adds nothing."""
    from hydra._internal.hydra import Hydra

    probe = getattr(Hydra.get_mode, "hydras_probe", Hydra.get_mode)

    def get_mode(self, config_name, overrides):
        named = ("hydra.mode", "hydra.searchpath")  # hydra.searchpath: configs outside conf/, which may set it
        if hydra_flags(sys.argv[1:]) or any(o.lstrip("+~").startswith(named) for o in overrides):
            return probe(self, config_name, overrides)
        return None  # as Hydra's probe finds it: then -m gives a sweep, and no -m one run

    get_mode.hydras_probe = probe
    Hydra.get_mode = get_mode


def check_composes(argv: list[str], config_name: str) -> None:
    """Compose conf/<config_name>.yaml with the command line's arguments, and raise a one-line FrostyError for what
    does not compose: a setting that does not exist, an option that is not in its group, a group typed without its
    +. In a sweep, each setting it varies is composed once; the options it varies are left to Frosty's sweeper,
    which refuses a job whose option does not exist alone. Hydra's own settings (hydra.*, hydra/...) are left to
    Hydra, and so is a command line with flags of Hydra's other than -m (--cfg, --config-dir, --help, ...), which
    may compose another config or none."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if hydra_flags(argv):
        return
    parser = OverridesParser.create()
    arguments = parser.parse_overrides(given(argv))
    if any(o.key_or_group.startswith("hydra.searchpath") for o in arguments):  # options outside conf/: Hydra's
        return

    def is_group(o) -> bool:  # generate.yaml has settings only
        return config_name == "train" and (CONF / o.key_or_group).is_dir()

    varied = {o.key_or_group for o in arguments if o.is_sweep_override() and is_group(o)}  # model=tiny,small
    overrides = []
    for o in arguments:
        if o.key_or_group.startswith("hydra") or o.key_or_group in varied:
            continue
        if o.is_sweep_override():  # whether its key exists does not depend on its values
            o = parser.parse_override(f"{'+' * o.is_add() or '++' * o.is_force_add()}{o.key_or_group}=null")
        if is_group(o) and not o.is_delete():  # (a base such as model=_base would compose)
            for option in o.value() if isinstance(o.value(), list) else [o.get_value_element_as_str()]:
                check_option(o.key_or_group, str(option))  # logger=[csv,tensorboard]: each
        overrides.append(o)

    def composed(chosen) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name, overrides=[o.input_line for o in chosen])

    try:
        composed(overrides)
    except ConfigCompositionException as err:
        key = getattr(err.__cause__, "full_key", None) or ""
        if key.split(".")[0] in varied:  # a setting of an option the sweep varies (optim=adamw,muon optim.momentum)
            return  # depends on the option: Frosty's sweeper composes each job
        try:  # the settings that do exist, for a suggestion
            config = composed([o for o in overrides if is_group(o)])
        except Exception:
            config = None
        raise FrostyError(composition_error(err, config, f"{config_name}.py")) from None
    except Exception:  # anything else is Hydra's to report, as it would without this check
        return
    groups = [p.name for p in CONF.iterdir() if p.is_dir()] if config_name == "train" else []
    for o in overrides:  # +experimnt=speedrun would add a key that nothing reads
        top_level = o.is_add() and "." not in o.key_or_group and not is_group(o)
        group = closest(o.key_or_group, groups) if top_level else None
        if group:
            raise FrostyError(f"{o.input_line}: there is no group {o.key_or_group} (it would add a setting that "
                              f"nothing reads): did you mean +{group}={o.value()}?")


def options(group: str) -> list[str]:
    """The options of a config group: its yaml files, less the bases (_base.yaml) that the options build on."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def check_option(group: str, option: str) -> None:
    if option not in options(group):
        raise FrostyError(not_an_option(group, option, options(group)))


def not_an_option(group: str, option: str, choices: list[str]) -> str:
    guess = closest(option, choices)
    listed = ", ".join(choices)
    if guess:
        return f"{group}={option} is not an option: did you mean {group}={guess}? (conf/{group}/: {listed})"
    return f"{group}={option} is not an option: choose one of {listed} (conf/{group}/)"


def closest(word: str, choices: list[str]) -> str | None:
    """The choice word most likely misspells, if one is close."""
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
    return matches[0] if matches else None


def composition_error(err: ConfigCompositionException, config: DictConfig | None, script: str) -> str:
    """One line for a config that does not compose; config: one without the offending arguments, where the settings
    that do exist are looked up for a suggestion (None: no suggestion)."""
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and "/" in err.missing_cfg_file:
        group, option = err.missing_cfg_file.rsplit("/", 1)
        return not_an_option(group, option, [o for o in err.options or [] if not o.startswith("_")])
    first = str(err).strip().splitlines()[0]
    key = getattr(err.__cause__, "full_key", None)  # the first key on the path that does not exist
    if key is None and "No match in the defaults list" in str(err):  # model=small for a group not chosen by default
        key = first.split("'")[1]
        plus = str(err).strip().splitlines()[-1].split(" use ")[-1]
        if (CONF / key).is_dir() and script == "train.py":
            return f"{key} is not chosen by default: add it with {plus}"
    if key is None:
        return first
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(config, parent) if config is not None and parent else config
    settings = sorted(k for k in node if not k.startswith("_")) if isinstance(node, DictConfig) else []  # no _target_
    message = f"{key} is not a setting of {parent or script}"
    if name in settings:  # there, until another argument took it away (a=null a.b=1): Hydra's own line
        return first
    guess = closest(name, settings)
    if guess:
        return f"{message}: did you mean {f'{parent}.' if parent else ''}{guess}?"
    if settings:
        message += f" ({', '.join(settings)})"
    if isinstance(node, DictConfig) and "_target_" in node:  # what it builds takes more arguments than Frosty's own
        return f"{message}; to pass it to what it builds: +{key}=..."  # e.g. +trainer.profiler=simple
    return message
