"""Import guards: training.ml never imports Django; its light modules do not even import torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ML = ROOT / "training" / "ml"
# Used by the web process (split_for, Sample, configs) and by the torch-free reference client.
TORCH_FREE = [
    *("config", "errors", "images", "metrics", "pipeline", "inference", "parity"),
    *("strategies", "plots", "transfer", "stages"),
]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT)},
    )


def test_no_module_mentions_django():
    pattern = re.compile(r"^\s*(import|from)\s+django\b", re.MULTILINE)
    offenders = [p.name for p in ML.glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_every_module_imports_without_django():
    result = _python(
        "import sys, pkgutil, importlib, training.ml as ml\n"
        "for m in pkgutil.iter_modules(ml.__path__): importlib.import_module('training.ml.' + m.name)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('django', 'rest_framework', 'celery')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_light_modules_work_with_torch_unavailable():
    modules = ", ".join(f"training.ml.{m}" for m in TORCH_FREE)
    result = _python(
        "import sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
        "sys.modules['torchvision'] = None\n"
        f"import {modules}\n"
        "from PIL import Image\n"
        "from training.ml.config import Preprocessing\n"
        "from training.ml.images import image_to_array\n"
        "from training.ml.pipeline import split_for\n"
        "print(image_to_array(Image.new('RGB', (300, 300)), preprocessing=Preprocessing()).shape, split_for('ab' * 32))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(3, 224, 224) train"


def test_no_module_uses_another_ml_modules_private_names():
    """What two modules share is public: nothing imports or reads another ML module's private names."""
    modules = "|".join(sorted(p.stem for p in ML.glob("*.py") if p.stem != "__init__"))
    imported = re.compile(r"from\s+training\.ml\.(\w+)\s+import\s+(\([^)]*\)|[^\n]+)")
    attribute = re.compile(rf"(?<![\w.])(?:training\.ml\.)?({modules})\._[A-Za-z]\w*")
    offenders = []
    for path in [*ROOT.glob("training/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/**/*.py")]:
        text = path.read_text()
        for match in imported.finditer(text):
            names = [n.split(" as ")[0].strip() for n in match.group(2).strip("()").split(",")]
            offenders += [f"{path.relative_to(ROOT)}: {match.group(1)}.{n}" for n in names
                          if n.startswith("_") and not n.startswith("__")]
        if path.parent != ML:  # a module may use its own private names
            offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in attribute.finditer(text)]
    assert offenders == []
