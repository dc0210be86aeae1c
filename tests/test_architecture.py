"""The architecture's promises, checked on the source: shared code asks a task's capabilities, never its name.

Outside `tunewise/tasks/`, no comparison may involve a task name or a tunewise problem type (`==`,
`!=`, `in`, `not in`, or `match` cases): that is what lets a new task join without touching shared
code. The layers themselves are checked by import-linter (`lint-imports` in .ci/run).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tunewise.tasks import TASKS, make_task

PACKAGE = Path(__file__).resolve().parents[1] / "tunewise"
# the pooled head's own file is copied beside saved weights as remote code: it picks its loss from
# transformers' config.problem_type ("regression", ...), as transformers' own heads do
EXEMPT = {PACKAGE / "models" / "pooled_classifier.py"}
PROBLEM_TYPES = {"single_label", "multi_label", "regression", "causal_lm", "token_classification"}
PROBLEM_TYPES |= {"extractive_question_answering"}


def forbidden_names() -> set[str]:
    return set(TASKS) | PROBLEM_TYPES


def compared_strings(node: ast.AST) -> list[str]:
    """String constants a comparison or a match statement tests against."""
    found: list[str] = []
    if isinstance(node, ast.Compare):
        for operand in [node.left, *node.comparators]:
            for item in ast.walk(operand):
                if isinstance(item, ast.Constant) and isinstance(item.value, str):
                    found.append(item.value)
    if isinstance(node, ast.match_case):
        for item in ast.walk(node.pattern):
            if isinstance(item, ast.Constant) and isinstance(item.value, str):
                found.append(item.value)
    return found


def comparisons_of_task_names(path: Path) -> list[str]:
    """`file:line: 'name'` for every comparison with a task name or problem type in one source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = forbidden_names()
    return [
        f"{path.name}:{node.pattern.lineno if isinstance(node, ast.match_case) else getattr(node, 'lineno', 0)}: "
        f"{value!r}"
        for node in ast.walk(tree)
        for value in compared_strings(node)
        if value in names
    ]


def test_no_task_name_or_problem_type_is_compared_outside_tasks() -> None:
    shared = [
        path for path in sorted(PACKAGE.rglob("*.py")) if (PACKAGE / "tasks") not in path.parents and path not in EXEMPT
    ]
    assert len(shared) > 40  # the scan really covers the package
    found = [hit for path in shared for hit in comparisons_of_task_names(path)]
    assert not found, "shared code compares task names or problem types; ask Capabilities instead:\n" + "\n".join(found)


def test_the_scan_finds_a_comparison(tmp_path: Path) -> None:
    """The check is not vacuous: a planted comparison is reported."""
    planted = tmp_path / "planted.py"
    planted.write_text('def f(task):\n    return task.name == "causal-lm" or task in ("x", "regression")\n')
    assert comparisons_of_task_names(planted) == ["planted.py:2: 'causal-lm'", "planted.py:2: 'regression'"]


def test_every_registered_task_declares_the_facts_shared_code_reads(tmp_path: Path) -> None:
    """Every task builds from its config class alone and declares its facts (before any data is read)."""
    for name, entry in TASKS.items():
        config = entry.config.model_validate({"task": name, "data": {"train": str(tmp_path / "train.csv")}})
        facts = make_task(config).facts()
        assert facts.name == name
        assert isinstance(facts.capabilities.reads_text, bool)


# Packages one stage needs and importing tunewise must not load: presidio imports spaCy, thinc and blis (53 MB of
# wheels, which a GPU machine running a benchmark with the data check off is not sent); sqlalchemy is `tune`'s alone.
STAGE_ONLY_PACKAGES = ("presidio_analyzer", "spacy", "sqlalchemy")


def test_importing_tunewise_loads_no_stage_only_package() -> None:
    code = f"import sys, tunewise.api, tunewise.cli\nprint(sorted(set({STAGE_ONLY_PACKAGES!r}) & set(sys.modules)))\n"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=300)
    assert loaded.stdout.strip() == "[]"
