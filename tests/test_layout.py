"""The folders show the architecture, and lower layers never import higher ones (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# synth's subpackages from the bottom up: a module may import its own layer and the ones below it.
SYNTH_LAYERS = ("media", "faces", "nets", "train", "audio", "avatar", "eval")
TOP_LOOSE = {"__init__.py", "errors.py", "device.py"}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports (at top level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_synth_has_subpackages_and_few_loose_modules():
    loose = {p.name for p in (ROOT / "synth").glob("*.py")}
    assert loose <= TOP_LOOSE, loose - TOP_LOOSE
    for layer in SYNTH_LAYERS:
        assert (ROOT / "synth" / layer / "__init__.py").is_file(), layer


@pytest.mark.parametrize("layer", SYNTH_LAYERS)
def test_synth_layers_import_only_downward(layer):
    higher = SYNTH_LAYERS[SYNTH_LAYERS.index(layer) + 1:]
    for path in (ROOT / "synth" / layer).rglob("*.py"):
        bad = {m for m in imported_modules(path) if m.split(".")[0] in ("thcli", "provenance", "detect")
               or (m.startswith("synth.") and m.split(".")[1] in higher)}
        assert not bad, f"{path.relative_to(ROOT)} imports a higher layer: {sorted(bad)}"


def test_provenance_does_not_import_detect_or_cli():
    for path in (ROOT / "provenance").rglob("*.py"):
        bad = {m for m in imported_modules(path) if m.split(".")[0] in ("detect", "thcli")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_a_planted_upward_import_is_caught(tmp_path):
    """Negative control: the checker sees an import inside a function body."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from synth.eval.protocol import run\n")
    assert "synth.eval.protocol" in imported_modules(f)
