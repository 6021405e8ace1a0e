"""docs/architecture.md stays true: every module and package it names exists, every package
of initfetch/ is described, and the layering it states holds (no backend named above
providers/, no stage importing the one above it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.helpers import REPO

DOC = (REPO / "docs/architecture.md").read_text()
PACKAGE = REPO / "initfetch"


def _named_paths() -> set[str]:
    """`name/` and `name.py` as the layout blocks (the fenced ones before "Who owns what") spell them."""
    head = DOC.split("## Who owns what")[0]
    blocks = "\n".join(head.split("```")[1::2])
    return set(re.findall(r"\b([a-z_]+/|[a-z_]+\.py)", blocks))


def test_every_name_in_the_layout_exists() -> None:
    names = _named_paths()
    assert names, "the layout block names nothing"
    missing = []
    for name in names:
        candidates = [PACKAGE / name, PACKAGE / "providers" / name, REPO / name]
        if not any(p.exists() for p in candidates):
            missing.append(name)
    assert not missing, f"docs/architecture.md names what does not exist: {sorted(missing)}"


def test_every_package_and_top_module_is_described() -> None:
    names = _named_paths()
    for path in sorted(PACKAGE.iterdir()):
        if path.name.startswith("__") or path.name == "py.typed":
            continue
        label = path.name + "/" if path.is_dir() else path.name
        if path.is_dir() and not (path / "__init__.py").exists():
            continue
        assert label in names, f"initfetch/{label} is not in docs/architecture.md"


def _imports(path: Path) -> set[str]:
    """Modules `path` imports at run time (what an `if TYPE_CHECKING:` block names is not)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_nothing_above_providers_names_a_backend() -> None:
    backends = ("initfetch.providers.vault", "initfetch.providers.aws", "initfetch.providers.azure")
    for path in PACKAGE.rglob("*.py"):
        if (PACKAGE / "providers") in path.parents:
            continue
        bad = [m for m in _imports(path) if m.startswith(backends)]
        assert not bad, f"{path.relative_to(REPO)} imports {bad}: talk to the Provider interface"
        text = path.read_text()
        assert 'type_name == "vault"' not in text and "VaultProvider" not in text, path


def test_stages_do_not_import_upward() -> None:
    """Each stage imports only the ones before it (run-time imports, lazy ones included)."""
    order = ["outdir", "manifest", "resolve", "templating", "preview", "pipeline", "watch", "commands", "cli"]
    for path in PACKAGE.rglob("*.py"):
        here = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if here not in order:
            continue
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] != "initfetch" or len(parts) < 2 or parts[1] not in order:
                continue
            assert order.index(parts[1]) <= order.index(here), (
                f"{path.relative_to(REPO)} imports {module}, a later stage"
            )
