#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian/Python 3.11 machine, then run it:
# the CPU build of torch first (a bare "torch" requirement would pull a multi-GB CUDA build),
# the package with its test extras, Xvfb for the napari widget tests, then pytest under xvfb-run.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
APT_PACKAGES="xvfb xauth libgl1 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 \
libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 \
libxcb-cursor0 libdbus-1-3 libfontconfig1"
missing=""
for pkg in $APT_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  echo "installing apt packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PY=${PYTHON:-python3}
"$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -e ".[testing]"

# Console scripts of the interpreter's own environment (a venv's bin/ need not be on PATH).
BIN=$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))')
tool() { if [ -x "$BIN/$1" ]; then echo "$BIN/$1"; else echo "$1"; fi; }
# The manifest must be valid and found by napari's plugin manager (npe2).
"$(tool npe2)" validate napari-alunet
# The core never imports a GUI toolkit nor widgets/ (setup.cfg holds the contracts).
"$(tool lint-imports)"
# Lint (pyproject.toml [tool.ruff.lint]): pyflakes, pycodestyle, import order, bugbear.
"$(tool ruff)" check napari_alunet tests benchmarks scripts sample_data
# Types (pyproject.toml [tool.mypy]; the package ships py.typed).
"$(tool mypy)" napari_alunet

export QT_QPA_PLATFORM=offscreen
XVFB=(xvfb-run -a -s "-screen 0 1600x1000x24")
# The widgets are written against qtpy: prove they also work on PyQt6 (PyQt5 is the default).
QT_API=pyqt6 "${XVFB[@]}" "$PY" -m pytest -q -p no:cacheprovider tests/test_widgets.py \
  tests/test_manifest.py
# The whole suite on the default binding (PyQt5). pytest exits 5 when it collects no test,
# which fails this script as it should.
"${XVFB[@]}" "$PY" -m pytest "$@"
