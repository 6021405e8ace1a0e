"""Static checks for `check`: template syntax, and that every secret a template uses is declared.
No values needed, nothing rendered. A template of text, comments and `{{ secrets.NAME }}`
(simple.py) is checked without Jinja, which is then not imported."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from initfetch.errors import Loc, Problem, ProblemKind
from initfetch.manifest import Manifest
from initfetch.templating.simple import parse_simple

if TYPE_CHECKING:
    import jinja2.nodes


def secrets_used(ast: jinja2.nodes.Template) -> set[tuple[str, int]]:
    """`secrets.X` and `secrets['X']` uses in a template: (name, line)."""
    import jinja2.nodes

    used: set[tuple[str, int]] = set()
    for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        target = getattr(node, "node", None)
        if not (isinstance(target, jinja2.nodes.Name) and target.name in ("secrets", "meta")):
            continue
        if isinstance(node, jinja2.nodes.Getattr):
            used.add((node.attr, node.lineno))
        elif isinstance(node, jinja2.nodes.Getitem):
            arg = node.arg
            if isinstance(arg, jinja2.nodes.Const) and isinstance(arg.value, str):
                used.add((arg.value, node.lineno))
    return used


def check_templates(manifest: Manifest) -> list[Problem]:
    """Syntax of every template and env value, and that each secret they use is declared."""
    problems: list[Problem] = []
    sources: list[tuple[str, Loc | None, str]] = []
    for out in manifest.outputs:
        if out.src is not None:
            try:
                sources.append((out.src.read_text(encoding="utf-8"), None, str(out.src)))
            except (OSError, UnicodeDecodeError) as e:
                problems.append(Problem(str(out.src), f"cannot read template: {type(e).__name__}"))
    for name, (source, where) in manifest.env.items():
        sources.append((source, where, f"env {name}"))
    env: Any = None
    for source, where, label in sources:
        prefix = f"{label}: " if where else ""
        simple = parse_simple(source)
        if simple is not None:
            used = simple.used()
        else:
            if env is None:
                from initfetch.templating.sandbox import environment

                env = environment(manifest.base_dir)
            parsed = _parse(env, source, where, label)
            if isinstance(parsed, Problem):
                problems.append(parsed)
                continue
            used = secrets_used(parsed)
        for secret, line in sorted(used):
            if secret not in manifest.secrets:
                problems.append(
                    Problem(
                        where or Loc(label, line),
                        f"{prefix}uses secrets.{secret}, which the manifest does not declare",
                        ProblemKind.UNDEFINED,
                    )
                )
    return problems


def _parse(env: Any, source: str, where: Loc | None, label: str) -> jinja2.nodes.Template | Problem:
    """The template's tree (kept for the render: Sandbox.parse_for_render), or its syntax problem."""
    import jinja2

    prefix = f"{label}: " if where else ""
    try:
        return env.parse_for_render(source)
    except jinja2.TemplateSyntaxError as e:
        at = where or Loc(label, e.lineno or 0)
        return Problem(at, f"{prefix}template syntax error: {e.message}", ProblemKind.SYNTAX)
    except RecursionError:  # the parser recurses once per nesting level
        return Problem(
            where or label, f"{prefix}template syntax error: nested too deeply", ProblemKind.NESTING
        )
