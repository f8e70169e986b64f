"""Hostile input: every kind of bad file gets one clear error naming it, or correct handling,
and leaves the project (or the absence of one) exactly as it was.

Two tables: files fed to ``import_pool`` (the pool folder) and failures while committing to an
existing project (full disk, read-only folder, bad label arrays). Each refusal is checked for
the file's name and the problem in the message, for an unchanged pool folder, and for nothing
left behind (no project, no staging folder) or an unchanged project (every database row and
every file compared before and after).
"""

from __future__ import annotations

import errno
import os
import resource
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _crash_worker import db_rows, embryo_labels, tree, write_binary_pool
from PIL import Image

from napari_alunet import fileio, imagefile
from napari_alunet.config import DEFAULT_CLASS_COLOURS, DataConfig
from napari_alunet.data import io as dio
from napari_alunet.data.io import InputError
from napari_alunet.events import drain
from napari_alunet.importer import import_pool
from napari_alunet.store import Project, ProjectError

PALETTE = np.asarray(DEFAULT_CLASS_COLOURS, np.uint8)
H, W = 30, 36


def write_rgb_pool(root: Path, n: int = 3) -> Path:
    """images/emb{i}.png (8-bit gray) + masks/emb{i}.png (palette colours), all valid."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        labels = embryo_labels(H, W, shift=i)
        Image.fromarray((80 + 30 * labels).astype(np.uint8)).save(root / "images" / f"emb{i}.png")
        Image.fromarray(PALETTE[labels]).save(root / "masks" / f"emb{i}.png")
    return root


def _import(src: Path, dst: Path):
    return drain(import_pool(src, dst, data=DataConfig(test_fraction=0.0, initial_fraction=0.0)))


# -- builders: each damages or extends a valid pool ----------------------------------------------
def png_with_header(width: int, height: int, bit_depth: int = 8, colour: int = 0) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` but which holds a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def bmp_with_header(width: int, height: int) -> bytes:
    """An 8-bit BMP whose header claims ``width`` x ``height`` (palette, then 16 bytes)."""
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 256, 0)
    body = info + palette + b"\x00" * 16
    return b"BM" + struct.pack("<IHHI", 14 + len(body), 0, 0, offset) + body


def tiff_with_header(width: int, height: int) -> bytes:
    """A little-endian TIFF whose one IFD claims ``width`` x ``height`` 8-bit pixels."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 8 + 2 + 12 * 9 + 4), (277, 3, 1, 1),
               (278, 4, 1, height), (279, 4, 1, min(width * height, 0xFFFFFFFF))]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, typ, count, value) for tag, typ, count, value in entries
    ) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 16


def replace_image(name: str, data: bytes) -> Callable[[Path], str]:
    def build(root: Path) -> str:
        (root / "images" / "emb1.png").unlink()
        (root / "masks" / "emb1.png").rename(root / "masks" / (Path(name).stem + ".png"))
        (root / "images" / name).write_bytes(data)
        return name
    return build


def truncated(fmt: str, keep: float) -> Callable[[Path], str]:
    def build(root: Path) -> str:
        src = root / "images" / "emb1.png"
        img = Image.open(src).convert("L")
        big = np.asarray(img.resize((W, H)))
        path = root / "images" / f"emb1.{fmt}"
        src.unlink()
        Image.fromarray(big).save(path)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        return path.name
    return build


def set_mask(array: np.ndarray, name: str = "emb1.png", **save) -> Callable[[Path], str]:
    def build(root: Path) -> str:
        (root / "masks" / "emb1.png").unlink()
        Image.fromarray(array).save(root / "masks" / name, **save)
        return name
    return build


def add_files(files: dict[str, bytes]) -> Callable[[Path], str]:
    def build(root: Path) -> str:
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        return ""
    return build


def symlink(rel: str, target: str) -> Callable[[Path], str]:
    def build(root: Path) -> str:
        os.symlink(target, root / rel)
        return Path(rel).name
    return build


def binary_mask_wrong_size(root: Path) -> str:
    for p in list(root.iterdir()):
        for f in p.iterdir():
            f.unlink()
        p.rmdir()
    write_binary_pool(root, n=3, h=H, w=W)
    name = "Blast_PCRM_1201751 D5 TE_Mask.bmp"
    Image.fromarray(np.zeros((H + 2, W), np.uint8)).save(root / "GT_TE" / name)
    return name


def duplicate_case(root: Path) -> str:
    (root / "images" / "EMB1.png").write_bytes((root / "images" / "emb1.png").read_bytes())
    return "EMB1.png"


def multipage_tiff(root: Path) -> str:
    import tifffile

    (root / "images" / "emb1.png").unlink()
    with tifffile.TiffWriter(root / "images" / "emb1.tif") as tif:
        for _ in range(3):
            tif.write(np.zeros((H, W), np.uint8), photometric="minisblack")
    return "emb1.tif"


def unreadable(root: Path) -> str:
    path = root / "images" / "emb2.png"
    path.chmod(0)
    return path.name


# -- accepted images: their values must come through -----------------------------------------------
def image_16bit(root: Path) -> str:
    values = (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 61 % 65536).astype(np.uint16)
    (root / "images" / "emb1.png").unlink()
    Image.fromarray(values).save(root / "images" / "emb1.png")
    import tifffile

    (root / "images" / "emb2.png").unlink()  # its mask masks/emb2.png matches emb2.tif
    tifffile.imwrite(root / "images" / "emb2.tif", values)
    return ""


def check_16bit(project: Project) -> None:
    expected = (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 61 % 65536).astype(np.float32)
    by_name = {r.name: r for r in project.images()}
    for name in ("emb1", "emb2"):
        got = project.read_image(by_name[name].id)
        np.testing.assert_array_equal(got, expected)  # 0-65535 kept, not cut to 8 bits
    assert expected.max() > 60000


RGBA = np.dstack([np.full((H, W), 200, np.uint8), np.full((H, W), 100, np.uint8),
                  np.full((H, W), 50, np.uint8), np.full((H, W), 7, np.uint8)])


def image_rgba(root: Path) -> str:
    (root / "images" / "emb1.png").unlink()
    Image.fromarray(RGBA, "RGBA").save(root / "images" / "emb1.png")
    return ""


def check_rgba(project: Project) -> None:
    rec = next(r for r in project.images() if r.name == "emb1")
    got = project.read_image(rec.id)
    np.testing.assert_allclose(got, 0.299 * 200 + 0.587 * 100 + 0.114 * 50, rtol=1e-5)


def image_palette(root: Path) -> str:
    idx = (np.arange(H * W).reshape(H, W) % 3).astype(np.uint8)
    img = Image.fromarray(idx, "P")
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    (root / "images" / "emb1.png").unlink()
    img.save(root / "images" / "emb1.png")
    return ""


def check_palette(project: Project) -> None:
    rec = next(r for r in project.images() if r.name == "emb1")
    got = project.read_image(rec.id)
    idx = np.arange(H * W).reshape(H, W) % 3
    np.testing.assert_allclose(got, np.array([0.299, 0.587, 0.114])[idx] * 255, rtol=1e-5)


def palette_and_rgba_masks(root: Path) -> str:
    labels = embryo_labels(H, W, shift=1)
    mask = Image.fromarray(labels, "P")
    mask.putpalette(PALETTE.ravel().tolist() + [0] * ((256 - len(PALETTE)) * 3))
    (root / "masks" / "emb1.png").unlink()
    mask.save(root / "masks" / "emb1.png")  # palette image: read through its palette
    rgba = np.dstack([PALETTE[embryo_labels(H, W, shift=2)], np.full((H, W), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "masks" / "emb2.png")
    return ""


def check_masks(project: Project) -> None:
    by_name = {r.name: r for r in project.images()}
    for name, shift in (("emb0", 0), ("emb1", 1), ("emb2", 2)):
        np.testing.assert_array_equal(project.read_ground_truth(by_name[name].id),
                                      embryo_labels(H, W, shift=shift))


def check_ignored(project: Project, summary) -> None:
    ignored = " ".join(summary.ignored)
    for what in ("notes.txt", "Thumbs.db", ".DS_Store", "sub/"):
        assert what in ignored, summary.ignored
    assert sum(project.counts().values()) == 3


def check_link_ignored(project: Project, summary) -> None:
    assert any("symbolic link" in s for s in summary.ignored), summary.ignored
    assert sum(project.counts().values()) == 3


@dataclass
class Case:
    build: Callable[[Path], str]
    error: str | None = None  # regex the error message must match (the culprit is checked too)
    check: Callable[..., None] | None = None  # accepted: check(project[, summary])


CASES = {
    "corrupt-image": Case(replace_image("emb1.png", os.urandom(300)),
                          r"not a BMP, PNG, TIFF or JPEG image|corrupt image header"),
    "corrupt-png-body": Case(replace_image("emb1.png", png_with_header(W, H)[:33] + b"\x00" * 80),
                             r"corrupt|truncated|cannot decode"),
    "truncated-png": Case(truncated("png", 0.5), r"truncated or corrupt"),
    "truncated-bmp": Case(truncated("bmp", 0.6), r"truncated or corrupt"),
    "truncated-tiff": Case(truncated("tif", 0.4), r"truncated or corrupt"),
    "zero-byte-image": Case(replace_image("emb1.png", b""), r"file is empty \(0 bytes\)"),
    "mask-wrong-size": Case(binary_mask_wrong_size,
                            r"mask is 32 x 36 .* but its image is 30 x 36"),
    "mask-colours-off-palette": Case(
        set_mask(np.full((H, W, 3), (255, 0, 255), np.uint8)),
        r"farther than 40 \(RGB distance\) from every class colour: \(255, 0, 255\)"),
    "mask-gray-not-class-indices": Case(set_mask(np.full((H, W), 200, np.uint8)),
                                        r"values 200 \(not class indices 0-4\)"),
    "mask-not-an-image": Case(add_files({"masks/emb1.png": b"this is text, not a mask\n"}),
                              r"not a BMP, PNG, TIFF or JPEG image"),
    "unmatched-image": Case(lambda root: ((root / "masks" / "emb2.png").unlink(), "emb2.png")[1],
                            r"no mask in masks/"),
    "unmatched-mask": Case(set_mask(PALETTE[embryo_labels(H, W)], name="stranger.png"),
                           r"matches no image"),
    "duplicate-names-by-case": Case(duplicate_case, r"two images with the same name"),
    "multipage-tiff": Case(multipage_tiff, r"TIFF holds a stack"),
    "huge-png-header": Case(replace_image("huge.png", png_with_header(50_000, 50_000)),
                            r"50000 x 50000 pixels .* more than the limit"),
    "huge-bmp-header": Case(replace_image("huge.bmp", bmp_with_header(50_000, 50_000)),
                            r"50000 x 50000 pixels .* more than the limit"),
    "huge-tiff-header": Case(replace_image("huge.tif", tiff_with_header(50_000, 50_000)),
                             r"50000 x 50000 pixels .* more than the limit"),
    "unreadable-file": Case(unreadable, r"permission denied"),
    "16-bit-png-and-tiff": Case(image_16bit, check=check_16bit),
    "rgba-image": Case(image_rgba, check=check_rgba),
    "palette-image": Case(image_palette, check=check_palette),
    "palette-and-rgba-masks": Case(palette_and_rgba_masks, check=check_masks),
    "non-image-files": Case(add_files({"images/notes.txt": b"hello", "images/Thumbs.db": b"\0",
                                       "images/.DS_Store": b"\0", "images/sub/x.png": b"",
                                       "README.md": b"# pool"}), check=check_ignored),
    "symlink-loop": Case(symlink("images/loop.png", "loop.png"), check=check_link_ignored),
    "symlink-broken": Case(symlink("images/gone.png", "/nonexistent/gone.png"),
                           check=check_link_ignored),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_hostile_pool(case: Case, tmp_path, monkeypatch):
    src = write_rgb_pool(tmp_path / "pool")
    culprit = case.build(src)
    if case.build is unreadable and os.geteuid() == 0:
        # root reads a chmod-000 file anyway: simulate the EACCES the file gives everyone else.
        real_open = open

        def deny(path, *args, **kwargs):
            if Path(path).name == culprit:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(imagefile, "open", deny, raising=False)
    before = tree(src)
    dst = tmp_path / "out" / "project"
    if case.error is not None:
        with pytest.raises(InputError) as info:
            _import(src, dst)
        message = str(info.value)
        assert culprit in message, f"the error does not name {culprit}: {message}"
        assert __import__("re").search(case.error, message), message
        # Nothing left behind: no project, no staging folder.
        assert not dst.exists()
        assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    else:
        summary = _import(src, dst)
        with Project.open(dst, read_only=True) as project:
            assert project.verify() == []
            if case.check.__code__.co_argcount == 2:
                case.check(project, summary)
            else:
                case.check(project)
    assert tree(src) == before, "the pool folder was changed"


# -- a header that claims 50,000 x 50,000 is refused before any pixel is decoded -------------------
@pytest.mark.parametrize("make,suffix", [(png_with_header, ".png"), (bmp_with_header, ".bmp"),
                                         (tiff_with_header, ".tif")], ids=["png", "bmp", "tiff"])
def test_huge_header_refused_fast_without_allocating(make, suffix, tmp_path):
    import tracemalloc

    path = tmp_path / f"bomb{suffix}"
    path.write_bytes(make(50_000, 50_000))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    tracemalloc.start()
    start = time.perf_counter()
    for reader in (dio.read_image, dio.read_image_size, dio.read_binary_mask,
                   dio.read_colour_mask):
        with pytest.raises(InputError, match=r"bomb.* 50000 x 50000 pixels"):
            reader(path)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert elapsed < 1.0, elapsed  # 2.5 GB of pixels would take seconds
    assert peak < 16 << 20, peak  # traced Python/numpy allocations: no pixel buffer
    assert grown_mib < 64, grown_mib  # and the process's peak did not jump


# -- the CLI reports one line naming the file ------------------------------------------------------
def test_cli_reports_one_clear_line(tmp_path, capsys):
    from napari_alunet.cli import main

    src = write_rgb_pool(tmp_path / "pool")
    (src / "images" / "emb1.png").write_bytes(b"")
    code = main(["import", str(src), str(tmp_path / "project"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "emb1.png" in err[0]
    assert "empty" in err[0]
    assert not (tmp_path / "project").exists()


# -- failures while writing to an existing project -------------------------------------------------
@pytest.fixture
def project_dir(tmp_path):
    src = write_rgb_pool(tmp_path / "pool", n=4)
    dst = tmp_path / "project"
    drain(import_pool(src, dst, data=DataConfig(test_fraction=0.25, initial_fraction=0.25)))
    with Project.open(dst) as project:  # some history to protect
        rec = project.images("unlabelled")[0]
        project.commit_label(rec.id, embryo_labels(H, W))
    return dst


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _full_disk_on(target: str):
    def arm(monkeypatch, project: Project) -> None:
        if target == "write":  # the data does not fit
            real_fdopen = os.fdopen

            class Full:
                def __init__(self, fd, *args, **kwargs):
                    self.handle = real_fdopen(fd, *args, **kwargs)

                def write(self, data):
                    self.handle.write(data[: len(data) // 2])  # half of it got written
                    raise OSError(errno.ENOSPC, "No space left on device")

                def __getattr__(self, name):
                    return getattr(self.handle, name)

                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    self.handle.close()

            monkeypatch.setattr(fileio.os, "fdopen", Full)
        elif target == "fsync":  # delayed allocation fails at fsync on ext4/xfs
            monkeypatch.setattr(fileio.os, "fsync", _enospc)
        elif target == "replace":
            monkeypatch.setattr(fileio.os, "replace", _enospc)
    return arm


def _read_only_folder(monkeypatch, project: Project) -> None:
    """A folder the user cannot write: real chmod when not root; root ignores modes, so there
    the EACCES every other user gets is simulated at the file creation."""
    folder = project.path / "masks" / "labels"
    folder.chmod(0o555)
    if os.geteuid() == 0:
        import tempfile

        def deny(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied",
                                  str(kwargs.get("dir", folder)))

        monkeypatch.setattr(tempfile, "mkstemp", deny)


def _commit(labels: Callable[[int, int], np.ndarray], pool: str = "unlabelled"):
    def act(project: Project) -> None:
        rec = project.images(pool)[0]
        project.commit_label(rec.id, labels(rec.height, rec.width))
    return act


PROJECT_CASES = {
    "full-disk-at-write": (_full_disk_on("write"), _commit(embryo_labels), OSError,
                           r"No space left on device"),
    "full-disk-at-fsync": (_full_disk_on("fsync"), _commit(embryo_labels), OSError,
                           r"No space left on device"),
    "full-disk-at-rename": (_full_disk_on("replace"), _commit(embryo_labels), OSError,
                            r"No space left on device"),
    "read-only-folder": (_read_only_folder, _commit(embryo_labels), PermissionError,
                         r"Permission denied.*masks/labels"),
    "labels-wrong-size": (None, _commit(lambda h, w: np.zeros((h + 1, w), np.uint8)), ValueError,
                          r"labels for 'emb\d' must be 30x36 .* got shape \(31, 36\)"),
    "labels-outside-classes": (None, _commit(lambda h, w: np.full((h, w), 9, np.uint8)),
                               ValueError, r"labels for 'emb\d' hold values outside 0..4"),
    "labels-on-test-image": (None, _commit(embryo_labels, pool="test"), ProjectError,
                             r"image 'emb\d' is in the test pool"),
}


@pytest.mark.parametrize("case", list(PROJECT_CASES.values()), ids=list(PROJECT_CASES))
def test_failed_commit_leaves_project_as_it_was(case, project_dir, monkeypatch):
    arm, act, error, pattern = case
    rows, files = db_rows(project_dir), tree(project_dir)
    with Project.open(project_dir) as project:
        if arm is not None:
            arm(monkeypatch, project)
        with pytest.raises(error, match=pattern) as info:
            act(project)
        if error is OSError:
            assert info.value.errno == errno.ENOSPC
        monkeypatch.undo()
        (project_dir / "masks" / "labels").chmod(0o755)
        assert db_rows(project_dir) == rows
        # No temporary file is left, even before the next open cleans debris.
        assert {k: v for k, v in tree(project_dir).items() if not k.startswith("project.db")} \
            == {k: v for k, v in files.items() if not k.startswith("project.db")}
        # And the project still works.
        rec = project.images("unlabelled")[-1]
        project.commit_label(rec.id, embryo_labels(H, W))
        assert project.verify() == []


def test_full_disk_during_import_leaves_nothing(tmp_path, monkeypatch):
    src = write_binary_pool(tmp_path / "pool", n=6, h=H, w=W)
    calls = {"n": 0}
    real = fileio.os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == 7:  # a few files in
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    dst = tmp_path / "out" / "project"
    with pytest.raises(OSError, match="No space left on device"):
        _import(src, dst)
    assert calls["n"] == 7
    assert list((tmp_path / "out").iterdir()) == []  # no project, no staging folder


def test_read_only_project_cannot_be_opened_for_writing(project_dir, monkeypatch):
    """The writer lock cannot be taken in a read-only folder: one clear error, nothing changed;
    opening read-only still works."""
    rows = db_rows(project_dir)
    lock = project_dir / "project.lock"
    if os.geteuid() == 0:
        from napari_alunet.store import lock as lock_module

        real = os.open

        def deny(path, flags, *args):
            if Path(path) == lock and flags & (os.O_RDWR | os.O_WRONLY):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path, flags, *args)

        monkeypatch.setattr(lock_module.os, "open", deny)
    else:
        lock.chmod(0o444)
        project_dir.chmod(0o555)
    try:
        with pytest.raises(ProjectError, match=r"cannot open .*project.lock for writing "
                                               r"\(Permission denied\).*read-only"):
            Project.open(project_dir)
        with Project.open(project_dir, read_only=True) as reader:
            assert sum(reader.counts().values()) == 4
    finally:
        project_dir.chmod(0o755)
        lock.chmod(0o644)
    assert db_rows(project_dir) == rows
