"""Architecture checks: the import direction of DESIGN.md and the packaging of every folder."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "sensor", "hub", "models", "calibration")

# DESIGN.md, "Repository layout": who may import whom.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "sensor": {"core", "models"},
    "hub": {"core"},
    "models": {"core"},
    "calibration": {"core", "sensor", "hub", "models"},
}


def _imports(path: Path, package: str) -> set[str]:
    """Top-level shotline subpackages imported by one module (absolute and relative imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel_parts = path.relative_to(ROOT).with_suffix("").parts  # e.g. ("hub", "locate")
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel_parts[: len(rel_parts) - node.level])
                if path.name == "__init__.py":
                    base = list(rel_parts[: len(rel_parts) - node.level + 1])[:-1] or base
                mod = ".".join(["shotline", *base] + ([node.module] if node.module else []))
                names = [mod]
            elif node.module:
                names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "shotline" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] in PACKAGES:
                found.add("GENERIC:" + parts[0])  # `import hub` would break once installed
    found.discard(package)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_import_direction(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if "training" in path.parts and package == "models":
            continue  # training code only the `train` extra needs; it may use calibration
        for target in _imports(path, package):
            if target.startswith("GENERIC:") or target not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)} imports shotline.{target}")
    assert not bad, "imports against DESIGN.md's direction:\n" + "\n".join(bad)


def _declared() -> tuple[list[str], dict[str, str]]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return cfg["packages"], cfg["package-dir"]


def test_every_package_folder_is_declared() -> None:
    packages, dirs = _declared()
    expected = set()
    for top in PACKAGES:
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            expected.add(".".join(["shotline", *rel]))
    assert expected == set(packages), (
        f"missing from pyproject packages: {sorted(expected - set(packages))}; "
        f"declared but absent: {sorted(set(packages) - expected)}"
    )
    for pkg in packages:
        assert dirs.get(pkg) == "/".join(pkg.split(".")[1:]), f"package-dir of {pkg} is wrong"


@pytest.mark.slow
def test_wheel_contains_every_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("shotline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages, _ = _declared()
    for pkg in packages:
        assert pkg.replace(".", "/") + "/__init__.py" in names, f"{pkg} missing from the wheel"
    # Package data the running system needs: the classifier and the review page.
    for data in ("shotline/models/impulse_classifier.tflite", "shotline/models/manifest.json",
                 "shotline/hub/web/static/app.js", "shotline/hub/web/static/vendor/leaflet/leaflet.js",
                 "shotline/hub/web/templates/index.html"):
        assert data in names, f"{data} missing from the wheel (pyproject package-data)"
    tops = {n.split("/")[0] for n in names if not n.endswith(".dist-info/") and "/" in n}
    tops = {t for t in tops if not t.endswith(".dist-info")}
    assert tops == {"shotline"}, f"the wheel installs generic top-level names: {tops}"
