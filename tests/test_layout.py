"""Guards that keep the source layout honest (design.md, "Layout")."""
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT}", "DJANGO_DEBUG": "1",
           "DJANGO_SETTINGS_MODULE": "config.settings"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_platform_is_a_source_root_not_a_package():
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_import_platform_is_the_standard_library():
    result = _run_python("import platform, sysconfig; print(platform.__file__); print(sysconfig.get_paths()['stdlib'])")
    assert result.returncode == 0, result.stderr
    module_file, stdlib = result.stdout.split()
    assert Path(module_file).parent == Path(stdlib)


def _top_level_names() -> set[str]:
    names = set()
    for folder in (ROOT, ROOT / "platform"):
        for child in folder.iterdir():
            if child.name.startswith((".", "_")):
                continue
            if child.is_dir() and (child / "__init__.py").exists():
                names.add(child.name)
            elif child.suffix == ".py":
                names.add(child.stem)
    return names


def test_no_top_level_module_shadows_stdlib_or_an_installed_package():
    names = _top_level_names()
    assert {"config", "training", "mobile_api", "submissions"} <= names
    installed = importlib.metadata.packages_distributions()
    clashes = {name for name in names if name in sys.stdlib_module_names or name in installed}
    # manage.py is a script, not an importable module anyone else provides. xdsl (pulled by
    # litert-torch's converter) wrongly ships its own test suite as a top-level "tests"; nothing
    # imports it, and ours comes first on the path (the repository root): tolerated for xdsl only.
    if installed.get("tests") == ["xdsl"]:
        clashes.discard("tests")
    assert clashes - {"manage"} == set()


# training.ml importing without Django (and partly without torch): tests/ml/test_ml_imports.py


def test_web_process_loads_urlconf_without_torch():
    # Nor the model converters (litert-torch pulls jax and transformers; coremltools its MIL stack)
    # or phone runtimes: they belong to the training worker, though the web process names the formats.
    heavy = ["torch", "litert_torch", "ai_edge_litert", "ai_edge_quantizer", "coremltools", "jax", "executorch"]
    result = _run_python(
        "import os, sys, django\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings')\n"
        "django.setup()\n"
        "from django.urls import resolve, reverse\n"
        "import config.urls, config.wsgi, mobile_api.update, mobile_api.api_downloads, training.ml.formats\n"
        "resolve(reverse('mobile-model-latest', args=['x']))\n"
        "from django.contrib import admin; admin.autodiscover()\n"
        f"print(sorted(set({heavy!r}) & set(sys.modules)))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_reference_client_imports_without_django_or_project_code():
    """mobile_api/client.py is one self-contained file app developers read and port.

    Run as a plain file (not as part of the mobile_api package, whose siblings are Django
    code) with neither the repository nor platform/ on the path: only the standard library,
    numpy, Pillow and what it imports lazily.
    """
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('model_client', {str(ROOT / 'mobile_api' / 'client.py')!r})\n"
        "module = sys.modules['model_client'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "module.InputSpec.from_manifest({'input_size': 8, 'resize': 8, 'mean': [0.5] * 3, 'std': [0.5] * 3})\n"
        "banned = {'django', 'rest_framework', 'torch', 'onnxruntime', 'training', 'mobile_api', 'config', 'common',\n"
        "          'litert_torch', 'ai_edge_litert', 'coremltools'}\n"
        "print(sorted(banned & set(sys.modules)))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
    result = subprocess.run([sys.executable, "-I", "-c", code], cwd="/", env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_reference_client_runs_as_a_script():
    """``python mobile_api/client.py``: its folder (server modules such as selectors.py) must not shadow the stdlib."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
    result = subprocess.run([sys.executable, str(ROOT / "mobile_api" / "client.py"), "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--base-url" in result.stdout
