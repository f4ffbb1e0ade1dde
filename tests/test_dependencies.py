"""The locks agree with pyproject.toml: a pin changed there without `scripts/lock` fails here.

(README, "Install, dependencies and lint".) Offline and fast: it reads the files only.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def _declared(*groups: str) -> dict[str, str]:
    """Direct dependencies of the base set plus the given extras, as {name: pinned version}."""
    entries = list(PYPROJECT["project"]["dependencies"])
    for group in groups:
        entries += PYPROJECT["project"]["optional-dependencies"][group]
    pins = {}
    for entry in entries:
        requirement = Requirement(entry)
        (spec,) = requirement.specifier  # pinned: exactly one ==
        assert spec.operator == "==", f"{entry}: direct dependencies are pinned with =="
        pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def _locked(path: Path) -> dict[str, tuple[str, int]]:
    """{name: (version, number of hashes)} of a compiled lock."""
    locked: dict[str, tuple[str, int]] = {}
    name = None
    for line in path.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            name = canonicalize_name(match.group(1))
            locked[name] = (match.group(2), 0)
        elif name and line.strip().startswith("--hash=sha256:"):
            version, hashes = locked[name]
            locked[name] = (version, hashes + 1)
    return locked


def test_the_full_lock_pins_every_direct_dependency_as_declared_with_hashes():
    locked = _locked(ROOT / "requirements.txt")
    declared = _declared(*PYPROJECT["project"]["optional-dependencies"])
    assert {name: locked.get(name, ("missing", 0))[0] for name in declared} == declared
    assert [name for name, (_, hashes) in locked.items() if hashes == 0] == []
    assert locked["torch"][0] == "2.14.1" and locked["torchvision"][0] == "0.29.1"


def test_the_web_lock_is_the_base_set_without_the_training_stack():
    web = _locked(ROOT / "requirements" / "web.txt")
    full = _locked(ROOT / "requirements.txt")
    base = _declared()
    assert {name: web.get(name, ("missing", 0))[0] for name in base} == base
    training = set(_declared("training")) - set(base)
    assert sorted(training & set(web)) == []
    # Both locks install the same version of every package they share.
    assert {name: version for name, (version, _) in web.items() if full.get(name, ("",))[0] != version} == {}
    assert [name for name, (_, hashes) in web.items() if hashes == 0] == []
