"""Checkpoints: round trip, refusal of code-executing pickles, damage and mismatch errors."""

from __future__ import annotations

import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_alunet.config import model_preset, to_dict
from napari_alunet.model import build_model
from napari_alunet.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

NAMES = ["background", "ICM", "TE", "ZP", "BL"]


def _trained(path: Path) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model("tiny")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1, 32, 32)).mean().backward()
    opt.step()
    save_checkpoint(path, model, model_config=model.config, optimizer=opt, epoch=4,
                    best_metric=0.75, class_names=NAMES, extra={"round": 2, "seed": 0})
    return model, opt


def test_round_trip_is_self_describing(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "model.pt"
    model, _ = _trained(path)
    loaded, meta = load_checkpoint(path, expected_model_config=model_preset("tiny"),
                                   expected_class_names=NAMES)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert not loaded.training
    assert meta["model_config"] == model_preset("tiny")
    assert (meta["epoch"], meta["best_metric"], meta["class_names"]) == (4, 0.75, NAMES)
    assert meta["extra"] == {"round": 2, "seed": 0}
    assert meta["optimizer_state"]["state"]  # resumable
    # The config is stored as a plain dict, readable without napari-alunet classes.
    raw = torch.load(path, weights_only=True)
    assert raw["model_config"] == to_dict(model_preset("tiny"))
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary debris


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"{sys.executable} -c \"open(r'{self.marker}', 'w')\"",))


@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_code_executing_file_is_refused_and_never_runs(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "pwned"
    evil = {"format": "napari-alunet-checkpoint", "model_state": _Payload(marker)}
    path = tmp_path / "evil.pt"
    if container == "torch_zip":
        torch.save(evil, path)
    else:
        path.write_bytes(pickle.dumps(evil))
    # The payload is live: plain unpickling would run it (checked on a copy, not the real path).
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists()
    with pytest.raises(CheckpointError, match="refusing to load.*could run code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_and_foreign_files_give_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    _trained(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or is not a checkpoint"):
        load_checkpoint(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(empty)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="not a napari-alunet checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    assert zipfile.is_zipfile(path)  # the good file was not touched


def _rewrite_member(src: Path, dst: Path, suffix: str, change) -> None:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            zout.writestr(item, change(data) if item.filename.endswith(suffix) else data)


def test_damage_inside_the_archive_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    _trained(path)
    # Half of the pickle: the decoder fails somewhere odd (struct.error); still a clear error.
    _rewrite_member(path, tmp_path / "pkl.pt", "data.pkl", lambda d: d[: len(d) // 2])
    with pytest.raises(CheckpointError, match="pkl.pt is truncated or is not a checkpoint"):
        load_checkpoint(tmp_path / "pkl.pt")
    # A flipped byte in a weight tensor decodes fine: only the stored checksum catches it.
    _rewrite_member(path, tmp_path / "rot.pt", "data/0",
                    lambda d: bytes([d[0] ^ 0xFF]) + d[1:])
    with pytest.raises(CheckpointError, match="rot.pt is damaged"):
        load_checkpoint(tmp_path / "rot.pt")


def test_architecture_and_class_mismatch_say_what_differs(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    _trained(path)
    other = model_preset("tiny", base_width=4, n_classes=3)
    with pytest.raises(CheckpointError, match=r"base_width: checkpoint 8 vs expected 4.*"
                                              r"n_classes: checkpoint 5 vs expected 3"):
        load_checkpoint(path, expected_model_config=other)
    with pytest.raises(CheckpointError, match="trained for classes"):
        load_checkpoint(path, expected_class_names=["background", "cell"])


def test_weights_that_do_not_fit_their_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    model = build_model("tiny", base_width=4)
    # Claim a different architecture than the weights have.
    save_checkpoint(path, model, model_config=model_preset("tiny"))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_save_converts_numpy_and_refuses_other_objects(tmp_path: Path) -> None:
    model = build_model("tiny")
    path = tmp_path / "x.pt"
    ids = np.array([3, 1, 4])
    save_checkpoint(path, model, model_config=to_dict(model.config), epoch=1,
                    extra={"dice": np.float64(0.5), "ids": ids, "pair": (np.int64(2), "a")})
    extra = load_checkpoint(path)[1]["extra"]
    assert extra["dice"] == 0.5 and type(extra["dice"]) is float
    assert extra["ids"].tolist() == [3, 1, 4] and extra["pair"] == [2, "a"]
    with pytest.raises(TypeError, match=r"extra\['where'\] holds a \w*Path"):
        save_checkpoint(path, model, model_config=model.config, extra={"where": tmp_path})
    # The refused save left the previous good file in place.
    assert load_checkpoint(path)[1]["epoch"] == 1
