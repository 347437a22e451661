"""The house shows the flow: imports point one way, and no module grows into a hub."""

from __future__ import annotations

import ast
import statistics
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("config", "storage", "nlp", "mailsync")
# Lower layers never import higher ones; within mailsync, a subpackage imports only lower ranks and
# itself (equal ranks are siblings that do not know each other). faults, logs and worker_process import
# nothing of ours.
TOP_RANK = {"config": 0, "storage": 1, "nlp": 2, "mailsync": 3}
MAILSYNC_RANK = {
    "faults": 0,
    "logs": 0,
    "worker_process": 0,  # how the parse and stage workers are started
    "mail": 1,
    "pipeline": 2,
    "approval": 3,
    "admin": 3,
    "service": 4,
    "evaluation": 5,
    "cli": 6,
    "__main__": 7,  # the console script's entry: it only hands over to cli
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module of ours that `path` imports, anywhere in it (TYPE_CHECKING and function bodies too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n.split(".")[0] in PACKAGES}


def place(module: str) -> tuple[int, str]:
    """(rank, room) of a module: its top package's layer, or its mailsync subpackage's."""
    parts = module.split(".")
    if parts[0] != "mailsync" or len(parts) == 1:
        return TOP_RANK[parts[0]] * 10, parts[0]
    room = parts[1]
    return 30 + MAILSYNC_RANK[room], f"mailsync.{room}"


def test_imports_point_one_way():
    known = modules()
    wrong = []
    for module, path in sorted(known.items()):
        rank, room = place(module)
        for target in sorted(imports(path)):
            if target not in known or target == "mailsync":
                continue  # `from mailsync.x import name` also yields "mailsync.x.name"
            their_rank, their_room = place(target)
            if their_room != room and their_rank >= rank:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_every_mailsync_module_lives_in_a_room_of_the_flow():
    rooms = {
        module.split(".")[1]
        for module in modules()
        if module.count(".") >= 1 and module.startswith("mailsync.")
    }
    assert rooms <= set(MAILSYNC_RANK)


def test_no_module_is_a_hub():
    sizes = {module: len(path.read_text(encoding="utf-8").splitlines()) for module, path in modules().items()}
    assert max(sizes.values()) <= 600, max(sizes, key=sizes.__getitem__)
    assert statistics.median(sizes.values()) <= 200
