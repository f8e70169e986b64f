"""The npe2 manifest is valid, every python_name resolves, and the core stays Qt-free."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

npe2 = pytest.importorskip("npe2")

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "napari.yaml"


@pytest.fixture(scope="module")
def manifest():
    return npe2.PluginManifest.from_file(MANIFEST)


def test_manifest_is_valid(manifest):
    assert manifest.name == "napari-alunet"
    # The package ships the manifest through a symlink to the top-level file.
    packaged = ROOT / "napari_alunet" / "napari.yaml"
    assert packaged.resolve() == MANIFEST.resolve()
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", str(MANIFEST)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_contributions(manifest):
    contributions = manifest.contributions
    widgets = {w.display_name for w in contributions.widgets}
    assert {"Active learning", "Project", "Train", "Acquire", "Review", "Rounds",
            "Inside the model"} <= widgets
    reader = contributions.readers[0]
    assert reader.filename_patterns == ["*"] and reader.accepts_directories
    assert [s.key for s in contributions.sample_data] == ["blastocysts"]
    for command in contributions.commands:
        module = command.python_name.split(":")[0]
        assert module.startswith(("napari_alunet.widgets", "napari_alunet.data.synthetic")), (
            f"{command.id} points outside the GUI package: {command.python_name}")


def test_every_python_name_resolves(manifest):
    # As napari does when a contribution is used (micro-sam's test_imports does the same).
    for command in manifest.contributions.commands:
        module_name, _, attr = command.python_name.partition(":")
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        assert callable(obj), command.python_name


def _core_modules() -> list[str]:
    import napari_alunet

    names = ["napari_alunet"]
    for info in pkgutil.walk_packages(napari_alunet.__path__, "napari_alunet."):
        if not info.name.startswith("napari_alunet.widgets"):
            names.append(info.name)
    return names


def test_core_imports_no_gui():
    modules = _core_modules()
    assert "napari_alunet.loop" in modules and "napari_alunet.store" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "gui = sorted(m for m in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', "
        "'magicgui', 'superqt') if m in sys.modules)\n"
        "assert not gui, f'the core imported {gui}'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]


def test_package_import_is_light():
    code = ("import sys, napari_alunet\n"
            "heavy = [m for m in ('torch', 'qtpy', 'napari') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
