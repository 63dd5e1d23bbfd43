"""dvc.yaml against the code: every project file a stage runs is one of the stage's deps.

DVC reruns a stage only when one of its deps changed, so a module a stage imports but does not
list would let `dvc status` call a stale result up to date. The imports are read from the code
(every ``import`` statement, also inside functions), transitively, packages' ``__init__`` included.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from helpers.project import ROOT

PACKAGES = ("mlp", "pipeline")
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The file of the project module ``name`` (a package's ``__init__.py``), or None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` and the packages importing it runs first: ``a``, ``a.b``."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def direct_imports(path: Path) -> frozenset[str]:
    """The project modules ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` imports the submodule `pkg.sub` when there is one.
            names = [node.module]
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            for module in _with_parents(name):
                if module_file(module) is not None:
                    found.add(module)
    return frozenset(found)


def imported_files(module: str) -> set[Path]:
    """Every project file that running ``python -m module`` executes."""
    todo = [m for m in _with_parents(module) if module_file(m)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(direct_imports(module_file(name)))
    return {module_file(name) for name in seen}


def stage_module(stage: dict) -> str:
    match = re.match(r"python -m (\S+)", stage["cmd"])
    assert match, f"not a `python -m` command: {stage['cmd']}"
    return match.group(1)


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(ROOT)
    return any(relative == Path(dep) or Path(dep) in relative.parents for dep in deps)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_project_file_a_stage_runs_is_a_dep(name):
    stage = STAGES[name]
    deps = [d for d in stage.get("deps", []) if isinstance(d, str)]
    files = imported_files(stage_module(stage))
    missing = sorted(str(f.relative_to(ROOT)) for f in files if not covered(f, deps))
    assert not missing, f"stage {name!r} runs these files but does not list them: {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_no_stage_lists_code_it_does_not_run(name):
    """Deps kept exact: a code dep that the stage never runs reruns it for nothing."""
    stage = STAGES[name]
    files = imported_files(stage_module(stage))
    code_deps = [
        d for d in stage.get("deps", []) if isinstance(d, str) and d.split("/")[0] in PACKAGES
    ]
    unused = [dep for dep in code_deps if not any(covered(f, [dep]) for f in files)]
    assert not unused, f"stage {name!r} lists code it does not run: {unused}"


def test_the_import_reader_sees_lazy_and_submodule_imports():
    files = {f.relative_to(ROOT).as_posix() for f in imported_files("pipeline.baseline")}
    # imported inside functions only (TensorFlow is imported lazily)
    assert "pipeline/training/keras_model.py" in files
    # packages whose __init__ runs on the way
    assert {"pipeline/__init__.py", "pipeline/training/__init__.py", "mlp/__init__.py"} <= files
