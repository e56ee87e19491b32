"""The house plan, checked: imports run one way down the package layers, nothing is flat at the
top but the entry points, and no file grows past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "nla_lightning"
# Lowest first: a module may import from its own layer and those before it, never after.
LAYERS = [
    ["errors"],
    ["core"],
    ["settings"],
    ["toy", "writers"],
    ["data"],
    ["evaluation"],
    ["training"],
    ["inference"],
    ["stages"],
    ["report"],
    ["pipeline"],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
FLAT_ALLOWED = {"__init__.py", "errors.py", "pipeline.py"}
MAX_LINES = 400


def _part(module: str) -> str | None:
    """The top-level part of nla_lightning an absolute module name belongs to."""
    parts = module.split(".")
    if parts[0] != "nla_lightning" or len(parts) == 1:
        return None
    return parts[1]


def imports(file: Path) -> list[tuple[int, str]]:
    """(line, nla_lightning.* module) for every import in the file, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def upward_imports(package: Path) -> list[str]:
    problems = []
    for file in sorted(package.rglob("*.py")):
        own = _part("nla_lightning." + ".".join(file.relative_to(package).with_suffix("").parts))
        if own is None or own == "__init__":
            continue
        for line, module in imports(file):
            other = _part(module)
            # `from nla_lightning import __version__` names the package itself: allowed.
            if other is None or other not in RANK:
                continue
            if RANK[other] > RANK[own]:
                where = file.relative_to(package)
                problems.append(f"{where}:{line} imports {module} ({other} is above {own})")
    return problems


def test_every_part_of_the_package_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()}
    parts -= {"__init__", "__pycache__", "py"}
    assert parts <= set(RANK), f"give {sorted(parts - set(RANK))} a layer in LAYERS"


def test_imports_run_one_way_down_the_layers():
    assert upward_imports(PACKAGE) == []


def test_the_check_catches_an_upward_import(tmp_path):
    package = tmp_path / "nla_lightning"
    (package / "core").mkdir(parents=True)
    (package / "core" / "bad.py").write_text(
        "def f():\n    from nla_lightning.training.rl import RLModule\n"
    )
    assert upward_imports(package) == [
        "core/bad.py:2 imports nla_lightning.training.rl (training is above core)"
    ]


def test_only_the_entry_points_are_flat_at_the_top():
    flat = {p.name for p in PACKAGE.glob("*.py")}
    assert flat <= FLAT_ALLOWED, f"move {sorted(flat - FLAT_ALLOWED)} into a package"


def test_no_file_is_over_400_lines():
    long = {
        str(f.relative_to(PACKAGE)): n
        for f in PACKAGE.rglob("*.py")
        if (n := len(f.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
