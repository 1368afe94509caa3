"""The docs stay true: every train.py and generate.py command they show composes, every relative link resolves,
and they state what is true now (no issue numbers, sessions or commit hashes; the README stays short)."""
import re
import shlex

import pytest

from conftest import ROOT
from frosty_lm.arguments import read_command_line

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


@pytest.mark.slow
def test_every_command_in_the_docs_passes_the_argument_check():
    commands = doc_commands()
    assert len(commands) > 30 and ("README.md", "train", ["+experiment=speedrun"]) in commands
    assert {name for name, _, _ in commands} >= {"README.md", "configuration.md", "experiments.md"}
    for name, script, argv in commands:
        try:
            read_command_line(argv, script)  # raises FrostyError for an option or a setting that does not exist
        except Exception as error:
            raise AssertionError(f"{name}: python {script}.py {shlex.join(argv)}: {error}") from error
