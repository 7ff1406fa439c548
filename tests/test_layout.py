"""The layout stays true: the runtime never imports the tooling in ``stream_app/tools/``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the CLI is the tools' front door; everything else here is what a worker runs
FRONT_DOORS = {ROOT / "stream_app" / "cli.py", ROOT / "stream_app" / "__main__.py"}


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update([node.module] + [f"{node.module}.{a.name}" for a in node.names])
    return names


def test_runtime_modules_do_not_import_tools() -> None:
    runtime = [p for d in ("stream_app", "features", "models") for p in (ROOT / d).rglob("*.py")
               if (ROOT / "stream_app" / "tools") not in p.parents and p not in FRONT_DOORS]
    assert runtime
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in _imported(p)
                                                  if n.startswith("stream_app.tools"))
                 for p in runtime}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_tools_find_the_checkout_scripts() -> None:
    from stream_app.tools.services import kafka_script

    assert kafka_script() == ROOT / "scripts" / "kafka-local"
