"""Import layers: a generator never imports a training concept, and the kd modules form no cycle (every import
statement counts, those inside functions too)."""

import ast
from pathlib import Path

import augkd

PACKAGE = Path(augkd.__file__).parent


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_generators_and_the_reductions_they_share_import_nothing_from_kd_train_or_mixers():
    later = ("augkd.kd", "augkd.train", "augkd.mixers")
    bad = {path.name: sorted(m for m in imports(path) if m == "augkd" or m.startswith(later))
           for path in [*(PACKAGE / "generators").glob("*.py"), PACKAGE / "reductions.py"]}
    assert not {name: found for name, found in bad.items() if found}


def test_kd_modules_import_each_other_without_a_cycle():
    graph = {path.stem: {m.rpartition(".")[2] for m in imports(path) if m.startswith("augkd.kd.")}
             for path in (PACKAGE / "kd").glob("*.py") if path.stem != "__init__"}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle {' -> '.join((*path, module))}"
        if module not in done:
            for other in graph.get(module, ()):
                visit(other, (*path, module))
            done.add(module)

    for module in graph:
        visit(module, ())
