"""Guards that keep the source layout honest (design.md, "Layout")."""
import ast
import functools
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


# --- the direction of imports (design.md, house style 11; issue 18) --------------------------
# The loop runs platform -> training -> mobile_api: a room reacts to the one before it through
# an event (training's ``version_published`` signal), never by importing it backwards. Read
# from the source with ast, so a function-local import counts as much as one at the top.

APPS = ("training", "mobile_api", *sorted(p.name for p in (ROOT / "platform").iterdir()
                                          if (p / "__init__.py").exists()))
# Function-local imports of training/mobile_api still left in platform/, each with its reason.
# Empty: an entry here is a debt the lead has agreed to, named by "module:function".
PLATFORM_BACKWARD_IMPORTS_ALLOWED: dict[str, str] = {}


def _app_root(app: str) -> Path:
    return ROOT / app if (ROOT / app).is_dir() else ROOT / "platform" / app


def _module_files(app: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of an app (migrations included)."""
    root = _app_root(app)
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an Import/ImportFrom node asks for (``from a import b`` gives a and a.b)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(max(node.level - 1, 0)):
        base = base.rpartition(".")[0]
    target = node.module or ""
    if node.level:
        target = f"{base}.{target}".strip(".")
    return [target, *(f"{target}.{alias.name}" for alias in node.names)]


@functools.cache  # each file is read once per session, however many guards ask
def _imports(path: Path, module: str) -> list[tuple[str, str, bool]]:
    """(imported name, enclosing function or "", inside ``if TYPE_CHECKING:``?) for every import in a file."""
    is_package = path.name == "__init__.py"
    found = []

    def visit(node: ast.AST, function: str, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in _imported_names(child, module, is_package):
                    found.append((name, function, type_checking))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, function or getattr(child, "name", "<lambda>"), type_checking)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, function, True)
            else:
                visit(child, function, type_checking)

    visit(ast.parse(path.read_text(), filename=str(path)), "", False)
    return found


def _top(name: str) -> str:
    return name.partition(".")[0]


def test_nothing_in_training_imports_mobile_api():
    backwards = [
        f"{module}: imports {name}" + (f" in {function}()" if function else "")
        for module, path in _module_files("training").items()
        for name, function, _ in _imports(path, module)
        if _top(name) == "mobile_api"
    ]
    assert backwards == [], "training reacts to mobile_api through events only:\n" + "\n".join(backwards)


def test_platform_imports_training_and_mobile_api_only_at_the_top():
    local = {}
    for app in APPS[2:]:
        for module, path in _module_files(app).items():
            for name, function, _ in _imports(path, module):
                if function and _top(name) in ("training", "mobile_api"):
                    local.setdefault(f"{module}:{function}", set()).add(_top(name))
    unexpected = sorted(set(local) - set(PLATFORM_BACKWARD_IMPORTS_ALLOWED))
    assert unexpected == [], "function-local imports running backwards:\n" + "\n".join(
        f"{where} imports {', '.join(sorted(local[where]))}" for where in unexpected
    )
    stale = sorted(set(PLATFORM_BACKWARD_IMPORTS_ALLOWED) - set(local))
    assert stale == [], f"allowed but gone (remove them from the allow-list): {stale}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for after in sorted(graph[node]):
            if after not in index:
                connect(after)
                low[node] = min(low[node], low[after])
            elif after in on_stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _module_graph(app: str, *, function_local: bool) -> dict[str, set[str]]:
    """Module -> the modules of the same app it imports (at its top; with function_local, anywhere).

    Imports under ``if TYPE_CHECKING:`` never run and are no edge; a package importing its own
    submodule, or a module its parent package, is none either.
    """
    modules = _module_files(app)
    graph = {}
    for module, path in modules.items():
        graph[module] = {
            name for name, function, type_checking in _imports(path, module)
            if not type_checking and (function_local or not function)
            and name in modules and name != module and not module.startswith(f"{name}.")
        }
    return graph


def test_module_graph_finds_a_cycle_and_ignores_type_checking_and_functions(tmp_path):
    """The cycle finder itself: a cycle through three modules, and two imports that are not edges."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nimport x.y\nif TYPE_CHECKING:\n    import x.z\n"
        "def f():\n    from . import w\n"
    )
    assert _imports(source, "x.m") == [
        ("typing", "", False), ("typing.TYPE_CHECKING", "", False), ("x.y", "", False), ("x.z", "", True),
        ("x", "f", False), ("x.w", "f", False),
    ]


def test_no_import_cycles_inside_an_app():
    """Neither at import time nor closed by a function-local import (the usual way to hide one)."""
    for function_local in (False, True):
        cycles = {app: _cycles(_module_graph(app, function_local=function_local)) for app in APPS}
        assert {app: found for app, found in cycles.items() if found} == {}, (
            "function-local imports included" if function_local else "imports at the top")
