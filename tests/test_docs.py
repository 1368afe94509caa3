"""The docs stay true: every train.py and generate.py command they show composes, every relative link resolves,
and they state what is true now (no issue numbers, sessions or commit hashes; the README stays short)."""
import re
import shlex

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import CONF, ROOT

DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def doc_commands() -> list[tuple[str, str, list[str]]]:
    """Every `python train.py ...` and `python generate.py ...` in the docs: (file, script, its arguments)."""
    found = []
    for doc in DOCS:
        for match in re.finditer(r"python (train|generate)\.py([^`|\n]*)", doc.read_text()):
            args = re.split(r"\s#", match.group(2))[0].strip().rstrip("\\")  # less a comment, or a continuation
            found.append((doc.name, match.group(1), shlex.split(args)))
    return found


def anchors(doc) -> set[str]:
    """The anchors of a markdown file's headings, as GitHub makes them."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", doc.read_text(), flags=re.M)}


def test_the_docs_are_there_and_the_readme_is_short():
    names = {doc.name for doc in DOCS}
    assert {"configuration.md", "experiments.md", "running.md", "troubleshooting.md", "performance.md",
            "architecture.md", "testing.md", "CHANGELOG.md"} <= names
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_every_relative_link_in_the_docs_resolves():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{doc.name}: {target} (no such heading)")
    assert not broken, broken


def test_the_docs_and_comments_state_what_is_true_now():
    """No issue numbers, filers, sessions or commit hashes in the docs, code or configs: history a user needs goes
    into CHANGELOG.md, and how a decision was reached into its commit message."""
    banned = re.compile(r"issue [0-9]|\bfiler\b|earlier session|(?<![.\w-])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"
                        r"|\bsince 20[0-9]{2}-|until then|before the change", flags=re.I)
    files = [*DOCS, *sorted((ROOT / "frosty_lm").glob("*.py")), *sorted((ROOT / "conf").rglob("*.yaml"))]
    found = [f"{file.relative_to(ROOT)}:{number}: {line.strip()}" for file in files
             for number, line in enumerate(file.read_text().splitlines(), 1) if banned.search(line)]
    assert not found, found


def one_job(argv: list[str]) -> list[str]:
    """The overrides of a command's first job: a sweep's first value of each a=x,y; a search's choice(...) and
    interval(...), which Optuna's sweeper draws, left out."""
    overrides = []
    arguments = [a for a in argv if ("=" in a or a.startswith("~")) and not a.startswith("-")]  # not Hydra's flags
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override():
            try:
                value = next(iter(override.sweep_string_iterator()))
            except Exception:  # noqa: BLE001  (a search's distribution: not a list of values)
                continue
            overrides.append(f"{override.get_key_element()}={value}")
        else:
            overrides.append(override.input_line)
    return overrides


@pytest.mark.slow
def test_every_command_in_the_docs_composes():
    commands = doc_commands()
    assert len(commands) > 30 and ("README.md", "train", ["+experiment=speedrun"]) in commands
    assert {name for name, _, _ in commands} >= {"README.md", "configuration.md", "experiments.md"}
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        for name, script, argv in commands:
            config = "train" if script == "train" else "generate"
            try:  # an option or a key that does not exist raises Hydra's own error
                compose(config_name=config, overrides=one_job(argv), return_hydra_config=True)
            except Exception as error:
                raise AssertionError(f"{name}: python {script}.py {shlex.join(argv)}: {error}") from error
