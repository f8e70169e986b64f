"""Checkpoints: a file crafted to run code is refused without running it; damaged files and
checkpoints of another model give one clear error saying what is wrong."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from _crash_worker import round_settings, write_binary_pool

from napari_alunet import fileio
from napari_alunet.config import DEFAULT_CLASS_NAMES, DataConfig, model_preset
from napari_alunet.events import drain
from napari_alunet.model import build_model
from napari_alunet.training.checkpoint import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)

NAMES = list(DEFAULT_CLASS_NAMES)


class Evil:
    """Unpickling this runs ``os.system`` (the classic pickle exploit)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalEvil(Evil):
    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.fixture
def good(tmp_path) -> Path:
    config = model_preset("tiny")
    return save_checkpoint(tmp_path / "good.pt", build_model(config), model_config=config,
                           class_names=NAMES, epoch=3, best_metric=0.5)


def _evil_files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    """Several ways to smuggle code into a checkpoint."""
    files = {}
    files["torch-zip-top-level"] = tmp_path / "a.pt"
    torch.save(Evil(marker), files["torch-zip-top-level"])
    # A real-looking napari-alunet checkpoint with the payload hidden in 'extra'.
    config = model_preset("tiny")
    payload = {"format": FORMAT, "format_version": 1, "model_config": {},
               "model_state": build_model(config).state_dict(), "extra": {"x": EvalEvil(marker)}}
    files["hidden-in-extra"] = tmp_path / "b.pt"
    torch.save(payload, files["hidden-in-extra"])
    files["legacy-pickle"] = tmp_path / "c.pt"  # torch's old non-zip format: a bare pickle
    files["legacy-pickle"].write_bytes(pickle.dumps(Evil(marker), protocol=2))
    files["legacy-torch-format"] = tmp_path / "d.pt"
    torch.save({"format": FORMAT, "x": Evil(marker)}, files["legacy-torch-format"],
               _use_new_zipfile_serialization=False)
    return files


@pytest.mark.parametrize("kind", ["torch-zip-top-level", "hidden-in-extra", "legacy-pickle",
                                  "legacy-torch-format"])
def test_code_in_a_checkpoint_is_refused_without_running(kind, tmp_path):
    marker = tmp_path / "PWNED"
    path = _evil_files(tmp_path, marker)[kind]
    # The exploit is real: plain unpickling runs it.
    if kind in ("legacy-pickle", "torch-zip-top-level"):
        probe = tmp_path / "probe"
        if kind == "legacy-pickle":
            pickle.loads(pickle.dumps(Evil(probe)))
        else:
            torch.load(path, weights_only=False)
            probe = marker
        assert probe.exists()
        probe.unlink()
    with pytest.raises(CheckpointError, match=r"refusing to load .*could run code") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists(), "the checkpoint ran code while being loaded"


def test_cli_predict_refuses_a_malicious_checkpoint(tmp_path, capsys):
    from napari_alunet.cli import main

    marker = tmp_path / "PWNED"
    path = _evil_files(tmp_path, marker)["hidden-in-extra"]
    pool = write_binary_pool(tmp_path / "pool", n=2, h=32, w=32)
    code = main(["predict", str(path), str(pool), str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "refusing to load" in err and str(path) in err
    assert not marker.exists()
    assert (not (tmp_path / "out" / "masks").exists()
            or not any((tmp_path / "out" / "masks").iterdir()))


@pytest.mark.parametrize("keep", [0, 10, 0.5, 0.99], ids=["empty", "10-bytes", "half", "tail-cut"])
def test_truncated_checkpoint_clear_error(keep, good, tmp_path):
    data = good.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=r"cut\.pt is truncated or is not a checkpoint"):
        load_checkpoint(cut)


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    # Random bytes parse as a legacy pickle with an unknown opcode; the refusal may call them
    # unsafe rather than damaged (reported to the checkpoint's owner), but names the file.
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": build_model("tiny").state_dict()}, other)
    with pytest.raises(CheckpointError, match="other.pt is a torch file but not a napari-alunet"):
        load_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_corrupted_member_inside_the_zip(good, tmp_path):
    """Bytes flipped inside the archive (bit rot) are caught, not loaded as other weights."""
    bad = tmp_path / "rot.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):
                data = data[: len(data) // 2]
            dst.writestr(item, data)
    with pytest.raises(CheckpointError, match="rot.pt"):
        load_checkpoint(bad)


def test_other_architecture_refused_with_the_differences(good):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(good, expected_model_config=model_preset("cpu"))
    message = str(info.value)
    assert "holds another architecture" in message
    assert "base_width: checkpoint 8 vs expected 16" in message
    assert "depth: checkpoint 2 vs expected 4" in message
    assert "input_size: checkpoint 32 vs expected 128" in message


def test_other_class_count_refused(tmp_path):
    config = model_preset("tiny", n_classes=3)
    path = save_checkpoint(tmp_path / "three.pt", build_model(config), model_config=config,
                           class_names=["background", "ICM", "TE"])
    with pytest.raises(CheckpointError, match=r"n_classes: checkpoint 3 vs expected 5"):
        load_checkpoint(path, expected_model_config=model_preset("tiny"))
    with pytest.raises(CheckpointError, match=r"trained for classes \['background', 'ICM', 'TE'\]"
                                              r" but \['background', 'ICM', 'TE', 'ZP', 'BL'\]"):
        load_checkpoint(path, expected_class_names=NAMES)


def test_weights_that_do_not_fit_their_config(tmp_path):
    """A file whose stored config says tiny but whose weights are another net's."""
    payload = torch.load(save_checkpoint(tmp_path / "x.pt", build_model("tiny"),
                                         model_config=model_preset("tiny")), weights_only=True)
    payload["model_state"] = build_model(model_preset("cpu")).state_dict()
    torch.save(payload, tmp_path / "swapped.pt")
    with pytest.raises(CheckpointError, match=r"swapped.pt: weights do not fit its own model"):
        load_checkpoint(tmp_path / "swapped.pt")


def test_newer_format_refused(good, tmp_path):
    payload = torch.load(good, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="written by a newer napari-alunet"):
        load_checkpoint(tmp_path / "future.pt")


def test_failed_save_keeps_the_previous_checkpoint(good, monkeypatch):
    before = good.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(good, build_model("tiny"), model_config=model_preset("tiny"))
    monkeypatch.undo()
    assert good.read_bytes() == before
    assert [p.name for p in good.parent.iterdir() if p.name.startswith(fileio.TEMP_PREFIX)] == []
    load_checkpoint(good)


def test_project_round_with_a_swapped_checkpoint(tmp_path):
    """A round's checkpoint replaced by another model's is refused when the round resumes,
    naming what differs, and the project is not changed."""
    from _crash_worker import db_rows

    from napari_alunet.importer import import_pool
    from napari_alunet.loop import run_round
    from napari_alunet.store import Project

    pool = write_binary_pool(tmp_path / "pool", n=12, h=40, w=50)
    dst = tmp_path / "project"
    drain(import_pool(pool, dst, data=DataConfig(test_fraction=0.2, initial_fraction=0.3)))
    settings = round_settings(epochs=1)
    with Project.open(dst) as project:
        assert drain(run_round(project, settings, device="cpu", stop_after="trained")).status \
            == "trained"
        ckpt = project.checkpoint_path(0)
    config = model_preset("tiny", base_width=4)
    save_checkpoint(ckpt, build_model(config), model_config=config, class_names=NAMES)
    rows = db_rows(dst)
    with Project.open(dst) as project:
        with pytest.raises(CheckpointError, match=r"base_width: checkpoint 4 vs expected 8"):
            drain(run_round(project, device="cpu"))
        # verify() sees that the file is not the one the round recorded (regression: it did not
        # check checkpoints at all).
        assert project.round(0).model_version != fileio.sha256_file(ckpt)[:16]
        assert project.verify() == ["file does not match its recorded hash: models/round_000.pt"]
    assert db_rows(dst) == rows
    ckpt.unlink()
    with Project.open(dst, read_only=True) as project:
        assert project.verify() == ["missing file: models/round_000.pt"]
    shutil.rmtree(dst)


def test_nan_weights_and_absurd_networks_are_refused_before_building(tmp_path, monkeypatch):
    """Issue 12, class 5: a checkpoint with NaN weights, or whose config asks for an absurd
    network, is refused with CheckpointError before the network is allocated."""
    from napari_alunet.training import checkpoint as ckpt

    payload = torch.load(save_checkpoint(tmp_path / "x.pt", build_model("tiny"),
                                         model_config=model_preset("tiny")), weights_only=True)
    first = next(k for k, v in payload["model_state"].items() if v.is_floating_point())
    nan = dict(payload, model_state={**payload["model_state"]})
    nan["model_state"][first] = torch.full_like(nan["model_state"][first], float("nan"))
    torch.save(nan, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN or infinite weights"):
        load_checkpoint(tmp_path / "nan.pt")
    huge = dict(payload, model_config={**payload["model_config"], "base_width": 100_000})
    torch.save(huge, tmp_path / "huge.pt")
    built = []
    monkeypatch.setattr("napari_alunet.model.unet.build_model",
                        lambda *a, **k: built.append(1) or build_model("tiny"))
    with pytest.raises(CheckpointError, match="asks for a network of about"):
        ckpt.load_checkpoint(tmp_path / "huge.pt")
    assert built == []
