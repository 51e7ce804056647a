"""The tree's architecture holds: product vs research, no import cycles, stages by name.

* The product does not import :mod:`structcore.research`: importing ``structcore``,
  ``structcore.cli`` and the detector, fitting, predicting, saving and loading load no
  research module (checked in a fresh interpreter, so nothing this test session imported
  counts).
* :mod:`structcore.io` reads and writes plain state and imports no detector (no cycle).
* The detector's modules import one another without cycles.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "python" / "structcore"

_PRODUCT_RUN = r"""
import json, sys, tempfile, os
import numpy as np
import structcore, structcore.cli
from structcore import Detector, Scorer
rng = np.random.default_rng(0)
train = rng.integers(100, 140, size=(4, 40, 40, 3), dtype=np.uint8)
det = Detector("resnet18", weights=None, dim=16, resize=32, crop=32, folds=2, variants=False)
pred = det.fit(train).predict(train[:2])
path = os.path.join(tempfile.mkdtemp(), "m.npz")
det.save(path)
Detector.load(path).predict(train[:1])
Scorer(path)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("structcore"))))
"""


def _modules_after(code: str) -> list[str]:
    import structcore

    # the structcore this session imports (the source tree with its built module, or the
    # installed package in CI), not necessarily PKG
    where = str(Path(structcore.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([where, env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_product_loads_no_research_module() -> None:
    loaded = _modules_after(_PRODUCT_RUN)
    assert "structcore.detector" in loaded and "structcore.cli" in loaded  # the run happened
    assert [m for m in loaded if m.startswith("structcore.research")] == []


def test_import_stays_light() -> None:
    """``import structcore`` (and the CLI, Detector, Scorer) load no SciPy submodule: the
    reference kernels and the defect makers import ``scipy.ndimage`` when called. Every Ray
    actor, CLI call and embedding application pays the import."""
    code = (
        "import json, sys\n"
        "import structcore, structcore.cli\n"
        "from structcore import Detector, Scorer\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('scipy.'))))\n"
    )
    heavy = [m for m in _modules_after(code) if not m.startswith(("scipy._", "scipy.version"))]
    assert heavy == []


def test_variant_scores_is_a_thin_call_into_research() -> None:
    code = _PRODUCT_RUN.replace(
        "Scorer(path)", "det.set_params(variants=False); det.variant_scores(pred.maps)"
    )
    assert "structcore.research.grid" in _modules_after(code)


def _imports(module: Path) -> set[str]:
    """Sibling modules of the package that ``module`` imports (at any level)."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    rel = module.relative_to(PKG.parent).with_suffix("").parts  # e.g. structcore, io
    here = list(rel[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name.startswith("structcore"):
                out.add(name)
                out.update(f"{name}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("structcore"))
    return out


def _graph() -> dict[str, set[str]]:
    mods = {}
    for path in PKG.rglob("*.py"):
        name = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return {m: {i for i in _imports(p) if i in mods and i != m} for m, p in mods.items()}


def test_io_does_not_import_the_detector() -> None:
    g = _graph()
    assert "structcore.detector" not in g["structcore.io"]


def test_product_modules_never_import_research() -> None:
    g = _graph()
    bad = {
        m: sorted(i for i in deps if i.startswith("structcore.research"))
        for m, deps in g.items()
        if not m.startswith("structcore.research")
    }
    # The one edge: Detector.variant_scores, a thin call imported inside the method (the
    # AST walk sees function-level imports too).
    allowed = {"structcore.detector": ["structcore.research.grid"]}
    assert {m: v for m, v in bad.items() if v} == allowed


def test_no_import_cycles_among_product_modules() -> None:
    g = _graph()
    product = {
        m: {d for d in deps if not d.startswith("structcore.research")} for m, deps in g.items()
    }
    # Lazy imports inside functions break cycles at run time but still show here; the
    # product's module graph must be acyclic outright except for the package __init__.
    product.pop("structcore", None)
    for deps in product.values():
        deps.discard("structcore")
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(product.get(m, ())):
            if state.get(d) == 1:
                pytest.fail(f"import cycle: {' -> '.join([*stack, m, d])}")
            if d not in state:
                visit(d, [*stack, m])
        state[m] = 2

    for m in sorted(product):
        if m not in state:
            visit(m, [])
