"""The mining package's shape (issue 11): no file over ~450 lines, no click in library modules, no
import cycles (imports inside functions count; ``if TYPE_CHECKING:`` blocks do not)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MINING = ROOT / "glomssl" / "mining"
#: The files this layout is checked for (synth_figures, yolo and separate have their own owner).
OWN = [
    "curate.py",
    "dedup.py",
    "download.py",
    "drawn_panels.py",
    "dup_groups.py",
    "embedding_search.py",
    "folder_stage.py",
    "image_hashes.py",
    "openi.py",
    "panel_features.py",
    "panel_stats.py",
    "pipeline.py",
    "replay.py",
    "scorer.py",
    "stages.py",
    "store.py",
]


def _imports(path: Path) -> set[str]:
    """Modules imported anywhere in ``path`` except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_files_are_short_and_free_of_click() -> None:
    for name in OWN:
        lines = (MINING / name).read_text(encoding="utf-8").count("\n")
        assert lines <= 450, f"{name}: {lines} lines"
    for path in [*MINING.glob("*.py"), ROOT / "glomssl" / "demo.py"]:
        assert not any(m.split(".")[0] == "click" for m in _imports(path)), path.name


def test_no_import_cycles_in_mining() -> None:
    modules = {f"glomssl.mining.{p.stem}": p for p in MINING.glob("*.py") if p.stem != "__init__"}
    graph = {m: {d for d in _imports(p) if d in modules and d != m} for m, p in modules.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            assert state.get(d) != 1, "import cycle: " + " -> ".join([*path, m, d])
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert graph["glomssl.mining.scorer"].isdisjoint({"glomssl.mining.curate"})
    assert "glomssl.mining.pipeline" not in graph["glomssl.mining.stages"]
