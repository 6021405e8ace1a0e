"""Static checks for `check`: template syntax, and that every secret a template uses is declared.
No values needed, nothing rendered."""

from __future__ import annotations

import jinja2
import jinja2.nodes

from initfetch.errors import Loc, Problem, ProblemKind
from initfetch.manifest import Manifest
from initfetch.templating.sandbox import environment


def secrets_used(ast: jinja2.nodes.Template) -> set[tuple[str, int]]:
    """`secrets.X` and `secrets['X']` uses in a template: (name, line)."""
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
    env = environment(manifest.base_dir)
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
    for source, where, label in sources:
        try:
            ast = env.parse_for_render(source)
        except jinja2.TemplateSyntaxError as e:
            at = where or Loc(label, e.lineno or 0)
            prefix = f"{label}: " if where else ""
            problems.append(Problem(at, f"{prefix}template syntax error: {e.message}", ProblemKind.SYNTAX))
            continue
        except RecursionError:  # the parser recurses once per nesting level
            prefix = f"{label}: " if where else ""
            problems.append(
                Problem(
                    where or label, f"{prefix}template syntax error: nested too deeply", ProblemKind.NESTING
                )
            )
            continue
        for secret, line in sorted(secrets_used(ast)):
            if secret not in manifest.secrets:
                at = where or Loc(label, line)
                prefix = f"{label}: " if where else ""
                problems.append(
                    Problem(
                        at,
                        f"{prefix}uses secrets.{secret}, which the manifest does not declare",
                        ProblemKind.UNDEFINED,
                    )
                )
    return problems
