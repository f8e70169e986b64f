"""The `alunet` command line: sample -> import -> status -> export, and clear errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from napari_alunet.cli import main
from napari_alunet.store import Project


@pytest.fixture
def sample_project(tmp_path):
    assert main(["sample", str(tmp_path / "pool"), "--n", "10", "--seed", "1",
                 "--shape", "48", "56"]) == 0
    assert main(["import", str(tmp_path / "pool"), str(tmp_path / "proj"), "--seed", "2",
                 "--quiet"]) == 0
    return tmp_path / "proj"


def test_sample_writes_public_layout(tmp_path):
    assert main(["sample", str(tmp_path / "s"), "--n", "3", "--layout", "both",
                 "--shape", "40", "40"]) == 0
    images = sorted(p.name for p in (tmp_path / "s" / "binary" / "images").iterdir())
    assert len(images) == 3 and images[0].endswith(" D5.BMP")
    assert len(list((tmp_path / "s" / "binary" / "GT_ICM").iterdir())) == 3
    assert len(list((tmp_path / "s" / "rgb" / "masks").iterdir())) == 3


def test_sample_import_status_export(tmp_path, sample_project, capsys):
    capsys.readouterr()
    assert main(["status", str(sample_project), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["images"] == 10
    assert status["pools"] == {"labelled": 1, "unlabelled": 7, "test": 2}
    assert status["classes"] == ["background", "ICM", "TE", "ZP", "BL"]
    assert status["layout"] == "binary" and status["rounds"] == []
    assert main(["status", str(sample_project)]) == 0
    assert "labelled 1" in capsys.readouterr().out

    assert main(["export", str(sample_project), str(tmp_path / "out"), "--ground-truth"]) == 0
    exported = sorted((tmp_path / "out").glob("*.png"))
    assert len(exported) == 10
    with Project.open(sample_project, read_only=True) as project:
        for record in project.images():
            png = np.asarray(Image.open(tmp_path / "out" / f"{record.name}.png"))
            assert png.shape == (record.height, record.width) == (48, 56)
            np.testing.assert_array_equal(png, project.read_ground_truth(record.id))


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not a napari-alunet project" in err
    (tmp_path / "empty").mkdir()
    assert main(["import", str(tmp_path / "empty"), str(tmp_path / "p")]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_console_script_entry_point(tmp_path):
    out = subprocess.run([sys.executable, "-m", "napari_alunet.cli", "--version"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("alunet ")


def test_module_entry_point_sees_every_command():
    out = subprocess.run([sys.executable, "-m", "napari_alunet.cli", "--help"],
                         capture_output=True, text=True, timeout=120)
    # The command names as the help lists them (one per line under COMMAND), not substrings
    # of the help text: a deleted command must fail this.
    listed = re.findall(r"^    ([a-z]+)\b", out.stdout, flags=re.MULTILINE)
    assert listed == ["sample", "import", "status", "curve", "verify", "export", "gui", "train",
                      "round", "score", "oracle", "predict", "experiment"]


def test_written_files_are_group_readable(tmp_path):
    import os

    from napari_alunet.fileio import atomic_write_bytes

    path = atomic_write_bytes(tmp_path / "f.bin", b"x")
    assert os.stat(path).st_mode & 0o044 == 0o044 & ~_umask()


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_round_in_region_mode_then_oracle_commits_partial_labels(tmp_path, sample_project,
                                                                 capsys):
    """`alunet round --unit region`: regions are queued, the oracle commits them as partial
    labels, and a region size larger than the model input is one clear error."""
    from napari_alunet.config import UNKNOWN_LABEL

    common = [str(sample_project), "--preset", "tiny", "--steps", "3", "--passes", "2",
              "--device", "cpu", "--quiet"]
    assert main(["round", *common, "--unit", "region", "--region-size", "64"]) == 2
    assert "region_size 64 is larger than the model input" in capsys.readouterr().err
    assert main(["round", *common, "--unit", "region", "--region-size", "8", "--top", "3"]) == 0
    assert main(["oracle", str(sample_project)]) == 0
    with Project.open(sample_project, read_only=True) as project:
        partial = [r.id for r in project.images("labelled")
                   if project.current_label(r.id).partial]
        assert partial
        for image_id in partial:
            assert (project.read_label(image_id) == UNKNOWN_LABEL).any()
    # The learning curve, headless: the same files the Rounds panel exports.
    capsys.readouterr()
    outs = [tmp_path / f"curve.{kind}" for kind in ("png", "svg", "pdf", "csv")]
    assert main(["curve", str(sample_project), *map(str, outs)]) == 0
    assert outs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert outs[1].read_text().lstrip().startswith("<?xml") and outs[2].read_bytes()[:4] == b"%PDF"
    rows = outs[3].read_text().splitlines()
    assert rows[0].startswith("round,status,n_labelled") and len(rows) == 2
    assert main(["curve", str(sample_project), str(tmp_path / "curve.jpg")]) == 2
    assert "name the file .png, .svg, .pdf or .csv" in capsys.readouterr().err
    assert not (tmp_path / "curve.jpg").exists()
    assert main(["status", str(sample_project), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_input_size"] == 32  # the tiny preset's


def test_nonsense_counts_and_fractions_are_refused(tmp_path, capsys):
    """Issue 12, class 5: each is one clear error (exit 2) and nothing is written."""
    assert main(["sample", str(tmp_path / "s"), "--n", "-3"]) == 2
    assert "--n must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert main(["sample", str(tmp_path / "pool"), "--n", "4", "--shape", "48", "56"]) == 0
    assert main(["import", str(tmp_path / "pool"), str(tmp_path / "p"), "--test-fraction",
                 "0.99", "--quiet"]) == 2
    assert "nothing is left to train on" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    assert main(["import", str(tmp_path / "pool"), str(tmp_path / "p"), "--quiet"]) == 0
    assert main(["oracle", str(tmp_path / "p"), "--wait", "nan"]) == 2
    assert "--wait" in capsys.readouterr().err


def test_a_padded_image_file_is_refused_by_its_size(tmp_path, monkeypatch):
    from napari_alunet import imagefile as io

    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    with image.open("ab") as handle:
        handle.write(b"\0" * 5000)  # junk after the PNG's end
    monkeypatch.setattr(io, "MAX_FILE_BYTES", 4096)
    with pytest.raises(io.InputError, match="more than the limit of 4,096"):
        io.read_image(image)


def test_verify_reports_tampered_and_wrong_size_files_and_damaged_databases(
        tmp_path, sample_project, capsys):
    """Issue 12, class 4: `alunet verify`; empty and foreign databases are one clear error."""
    import shutil
    import sqlite3

    assert main(["verify", str(sample_project)]) == 0
    assert "check out" in capsys.readouterr().out
    with Project.open(sample_project) as project:
        record = project.images("unlabelled")[0]
        version = project.commit_label(record.id, np.ones((record.height, record.width),
                                                          np.uint8))
        image_file = sample_project / project.images("test")[0].rel_path
    # A label replaced by one of another size, an image edited in place.
    Image.fromarray(np.ones((5, 5), np.uint8)).save(sample_project / version.rel_path)
    with image_file.open("ab") as handle:
        handle.write(b"\0")
    assert main(["verify", str(sample_project), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    text = "\n".join(problems)
    assert f"wrong size: {version.rel_path} is 5 x 5" in text
    assert f"does not match its recorded hash: {image_file.relative_to(sample_project)}" in text
    broken = tmp_path / "broken"
    shutil.copytree(sample_project, broken)
    (broken / "project.db").write_bytes(b"")
    for name in ("project.db-wal", "project.db-shm"):
        (broken / name).unlink(missing_ok=True)
    assert main(["status", str(broken)]) == 2
    assert "is empty (0 bytes)" in capsys.readouterr().err
    (broken / "project.db").unlink()
    sqlite3.connect(broken / "project.db").execute("CREATE TABLE other (x)").connection.close()
    assert main(["verify", str(broken)]) == 2
    assert "not a napari-alunet database" in capsys.readouterr().err


def test_control_characters_in_names_are_escaped_when_printed(tmp_path, capsys):
    """Issue 12, class 5: an image named with a terminal escape sequence cannot drive the
    user's terminal through our output (errors quote names)."""
    from napari_alunet.cli import shown_name

    evil = "emb\x1b[2J\x1b]0;pwned\x07"
    assert shown_name(evil) == "emb\\x1b[2J\\x1b]0;pwned\\x07"
    assert shown_name("new\nline") == "new\\x0aline"
    pool = tmp_path / "pool" / "images"
    pool.mkdir(parents=True)
    (pool / f"{evil}.png").write_bytes(b"not an image")
    assert main(["import", str(tmp_path / "pool"), str(tmp_path / "p"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\\x1b[2J" in err


_GUI_PACKAGES = ("napari", "qtpy", "PyQt5", "PyQt6", "magicgui", "superqt", "npe2", "vispy")


def test_the_commands_run_on_a_headless_install(tmp_path):
    """``pip install napari-alunet`` without the GUI extra: no napari, Qt or magicgui. Blocking
    those imports in a fresh interpreter, the whole loop runs from the command line (sample,
    import, a tiny round, the oracle, status, the curve) and no GUI module is ever loaded."""
    import textwrap

    pool, project = tmp_path / "pool", tmp_path / "proj"
    code = textwrap.dedent(f"""
        import sys
        for name in {_GUI_PACKAGES!r}:
            sys.modules[name] = None  # "import name" now fails as for an absent package
        from napari_alunet.cli import main
        steps = [
            ["sample", {str(pool)!r}, "--n", "8", "--shape", "48", "56"],
            ["import", {str(pool)!r}, {str(project)!r}, "--quiet", "--initial-fraction", "0.3"],
            ["round", {str(project)!r}, "--preset", "tiny", "--steps", "2", "--passes", "2",
             "--top", "2", "--device", "cpu", "--quiet"],
            ["oracle", {str(project)!r}],
            ["status", {str(project)!r}],
            ["curve", {str(project)!r}, {str(tmp_path / "curve.csv")!r}],
        ]
        for argv in steps:
            rc = main(argv)
            assert rc == 0, (argv, rc)
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in {_GUI_PACKAGES!r} and sys.modules[m] is not None)
        assert not loaded, loaded
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "curve.csv").read_text().startswith("round,")


def test_gui_command_opens_napari_in_its_own_process(tmp_path, sample_project, monkeypatch,
                                                      capsys):
    import importlib.util

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command: calls.append(command) or 0)
    assert main(["gui", str(sample_project)]) == 0
    assert calls[-1][1:] == ["-m", "napari_alunet.widgets.launch", str(sample_project)]
    assert main(["gui"]) == 0
    assert calls[-1][1:] == ["-m", "napari_alunet.widgets.launch"]
    # Not a project: one clear error, napari is not started.
    assert main(["gui", str(tmp_path)]) == 2
    assert "not a project" in capsys.readouterr().err and len(calls) == 2
    # A headless install: says what to install instead of a traceback.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert main(["gui", str(sample_project)]) == 2
    assert "napari-alunet[pyqt5]" in capsys.readouterr().err and len(calls) == 2
