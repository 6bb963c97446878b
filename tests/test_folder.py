"""load_folder: decoding every kind of image, labels, bad files, bombs, and the cache."""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from vaekit.config import DataConfig
from vaekit.data.files import folder_cache, images
from vaekit.data.files.folder import load_folder
from vaekit.data.files.images import decode_image
from vaekit.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def cfg(path: Path, **kw: object) -> DataConfig:
    base: dict[str, object] = {"name": str(path), "image_size": 8, "test_fraction": 0.25}
    return DataConfig(**{**base, **kw})  # type: ignore[arg-type]


def rgb(
    path: Path,
    colour: tuple[int, int, int] = (10, 20, 30),
    size: tuple[int, int] = (8, 8),
    fmt: str | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)
    return path


def noise_png(path: Path, side: int = 64) -> bytes:
    """A PNG that compresses badly, so cutting it in half truncates its pixel data."""
    a = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def stored(path: Path, attr: str = "mode") -> Any:
    """An attribute of the file as Pillow opens it (checks the test wrote what it meant to)."""
    with Image.open(path) as im:
        return np.asarray(im) if attr == "pixels" else getattr(im, attr)


def everything(ds: object) -> torch.Tensor:
    return torch.cat([ds.x_train, ds.x_test])  # type: ignore[attr-defined]


def one(tmp_path: Path, make, **kw: object) -> np.ndarray:  # noqa: ANN001
    """Decode the single image that `make(path)` writes, through decode_image."""
    p = tmp_path / "img"
    p = make(p) or p
    return decode_image(p, kw.pop("image_size", 8), **kw)  # type: ignore[arg-type]


# ---- folders and labels ------------------------------------------------------------------


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    for i in range(8):
        rgb(tmp_path / f"{i}.png", (i * 30, 0, 0), size=(12, 12))
    (tmp_path / "notes.txt").write_text("x")
    ds = load_folder(tmp_path, cfg(tmp_path), progress=False)
    assert ds.x_train.dtype == torch.uint8 and ds.shape == (3, 8, 8)
    assert (len(ds.x_train), len(ds.x_test)) == (6, 2)
    assert ds.y_train is None and ds.class_names == []
    assert ds.name == tmp_path.name
    assert ds.info["images"] == 8 and ds.info["ignored_non_images"] == 1
    assert ds.info["source"] == "folder" and ds.info["split"]["test"] == 2  # type: ignore[index]
    reds = sorted(int(v) for v in everything(ds)[:, 0, 0, 0])
    assert reds == [i * 30 for i in range(8)]


def test_subfolders_become_sorted_labels(tmp_path: Path) -> None:
    for i in range(4):
        rgb(tmp_path / "zebra" / f"{i}.png", (255, 255, 255))
        rgb(tmp_path / "ant" / "deeper" / f"{i}.jpg", (0, 0, 0))  # nested: still class "ant"
    ds = load_folder(tmp_path, cfg(tmp_path), progress=False)
    assert ds.class_names == ["ant", "zebra"]
    x = everything(ds)
    y = torch.cat([ds.y_train, ds.y_test])  # type: ignore[list-item]
    assert y.dtype == torch.int64 and sorted(y.tolist()) == [0] * 4 + [1] * 4
    assert (x[y == 0].float().mean() < 10) and (x[y == 1].float().mean() > 245)
    again = load_folder(tmp_path, cfg(tmp_path), progress=False)  # from the cache
    assert again.info["cache_hit"] and again.class_names == ["ant", "zebra"]
    assert torch.equal(again.y_train, ds.y_train)  # type: ignore[arg-type]


def test_top_level_images_beside_classes_mean_unlabelled(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for name in ("a/1.png", "a/2.png", "b/1.png", "b/2.png", "loose.png"):
        rgb(tmp_path / name)
    ds = load_folder(tmp_path, cfg(tmp_path), progress=False)
    assert ds.y_train is None and ds.class_names == []
    assert "loose.png" in capsys.readouterr().err


def test_one_subfolder_is_unlabelled(tmp_path: Path) -> None:
    for i in range(4):
        rgb(tmp_path / "only" / f"{i}.png")
    ds = load_folder(tmp_path, cfg(tmp_path), progress=False)
    assert ds.y_train is None and ds.class_names == []


def test_hidden_files_and_folders_are_ignored(tmp_path: Path) -> None:
    for i in range(4):
        rgb(tmp_path / f"{i}.png")
    rgb(tmp_path / ".hidden.png")
    rgb(tmp_path / ".thumbs" / "x.png")
    ds = load_folder(tmp_path, cfg(tmp_path), progress=False)
    assert ds.info["images"] == 4 and ds.info["ignored_non_images"] == 0


# ---- colour modes, bit depths, geometry ----------------------------------------------------


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    a = np.zeros((8, 8, 4), dtype=np.uint8)
    a[..., 0] = 200  # red everywhere, but...
    a[:4, :, 3] = 0  # ...the top half is fully transparent
    a[4:, :, 3] = 255
    x = one(tmp_path, lambda p: Image.fromarray(a, "RGBA").save(p, format="PNG"))
    assert (x[:, :4] == 255).all()  # transparent -> white, not black or red
    assert (x[:, 4:, :] == np.array([200, 0, 0])[:, None, None]).all()


def test_la_image_is_composited_on_white(tmp_path: Path) -> None:
    a = np.zeros((8, 8, 2), dtype=np.uint8)  # black, fully transparent
    x = one(tmp_path, lambda p: Image.fromarray(a, "LA").save(p, format="PNG"), mode="L")
    assert x.shape == (1, 8, 8) and (x == 255).all()


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_16_bit_png_keeps_contrast(tmp_path: Path, mode: str) -> None:
    a = np.zeros((8, 8), dtype=np.uint16)
    a[:, :2], a[:, 2:4], a[:, 4:6], a[:, 6:] = 65535, 32768, 257, 0
    x = one(tmp_path, lambda p: Image.fromarray(a).save(p, format="PNG"), mode=mode)
    assert stored(tmp_path / "img") == "I;16"
    assert x.shape[0] == len(mode)
    assert x[0, 0].tolist() == [255, 255, 128, 128, 1, 1, 0, 0]  # scaled, not clipped to 255


def test_32_bit_tiff_with_16_bit_values_is_scaled(tmp_path: Path) -> None:
    a = np.array([[65535, 32768], [257, 0]], dtype=np.int32)
    x = one(tmp_path, lambda p: Image.fromarray(a).save(p, format="TIFF"), image_size=2, mode="L")
    assert stored(tmp_path / "img") == "I"
    assert x[0].tolist() == [[255, 128], [1, 0]]


def test_palette_image(tmp_path: Path) -> None:
    def make(p: Path) -> None:
        im = Image.new("P", (8, 8), 1)
        im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
        im.save(p, format="PNG")

    x = one(tmp_path, make)
    assert (x == np.array([10, 200, 30])[:, None, None]).all()


def test_palette_transparency_becomes_white(tmp_path: Path) -> None:
    def make(p: Path) -> None:
        im = Image.new("P", (8, 8), 1)
        im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
        im.save(p, format="PNG", transparency=1)

    assert (one(tmp_path, make) == 255).all()


def test_gray_to_rgb_and_rgb_to_gray(tmp_path: Path) -> None:
    gray = one(tmp_path, lambda p: Image.new("L", (8, 8), 100).save(p, format="PNG"))
    assert gray.shape == (3, 8, 8) and (gray == 100).all()
    rgb(tmp_path / "red.png", (255, 0, 0))
    red = decode_image(tmp_path / "red.png", 8, "L")
    assert red.shape == (1, 8, 8) and (red == 76).all()  # ITU-R 601 luma of pure red


def test_channels_1_gives_one_channel_dataset(tmp_path: Path) -> None:
    for i in range(4):
        rgb(tmp_path / f"{i}.png", (255, 0, 0))
    ds = load_folder(tmp_path, cfg(tmp_path, channels=1), progress=False)
    assert ds.shape == (1, 8, 8) and (everything(ds) == 76).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    x = one(tmp_path, lambda p: Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(p, "JPEG"))
    assert stored(tmp_path / "img") == "CMYK"
    assert np.abs(x.astype(int) - np.array([255, 0, 0])[:, None, None]).max() <= 8


@pytest.mark.parametrize("size", [(10, 20), (50, 30), (3, 3), (100, 100), (8, 8)])
def test_any_size_comes_out_square(tmp_path: Path, size: tuple[int, int]) -> None:
    x = one(tmp_path, lambda p: rgb(p, size=size, fmt="PNG"), image_size=16)
    assert x.shape == (3, 16, 16) and x.dtype == np.uint8


def test_mixed_sizes_in_one_folder(tmp_path: Path) -> None:
    for i, size in enumerate([(10, 20), (50, 30), (3, 3), (100, 100)]):
        rgb(tmp_path / f"{i}.png", size=size)
    ds = load_folder(tmp_path, cfg(tmp_path, image_size=12), progress=False)
    assert ds.shape == (3, 12, 12) and ds.info["images"] == 4


def test_wide_image_is_centre_cropped(tmp_path: Path) -> None:
    a = np.zeros((16, 48, 3), dtype=np.uint8)
    a[:, :16, 0] = a[:, 16:32, 1] = a[:, 32:, 2] = 255  # red | green | blue
    x = one(tmp_path, lambda p: Image.fromarray(a).save(p, format="PNG"), image_size=16)
    assert (x[1] == 255).all() and (x[0] == 0).all() and (x[2] == 0).all()  # the green middle


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    a = np.full((16, 16), 255, dtype=np.uint8)
    a[:, :8] = 0  # stored: left half black
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the black half goes to the top
    x = one(
        tmp_path,
        lambda p: Image.fromarray(a).save(p, "JPEG", exif=exif, quality=95),
        image_size=16,
        mode="L",
    )
    plain = stored(tmp_path / "img", "pixels")
    assert plain[:, :4].mean() < 20 and plain[:, 12:].mean() > 235  # the file as stored
    assert x[0, :4].mean() < 20 and x[0, 12:].mean() > 235  # top black, bottom white


def test_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    x = one(tmp_path, lambda p: frames[0].save(p, "GIF", save_all=True, append_images=frames[1:]))
    assert stored(tmp_path / "img", "n_frames") == 2
    assert (x[0] > 240).all() and (x[2] < 15).all()


@pytest.mark.parametrize("ext", ["bmp", "webp", "tif", "JPEG"])
def test_other_formats_and_upper_case_extensions(tmp_path: Path, ext: str) -> None:
    fmt = {"tif": "TIFF", "JPEG": "JPEG"}.get(ext, ext.upper())
    for i in range(4):
        rgb(tmp_path / f"{i}.{ext}", (0, 250, 0), fmt=fmt)
    ds = load_folder(tmp_path, cfg(tmp_path), progress=False)
    assert ds.info["images"] == 4 and (everything(ds)[:, 1].float().mean() > 240)


# ---- bad files --------------------------------------------------------------------------


def bad_folder(tmp_path: Path) -> tuple[Path, Path]:
    for i in range(4):
        rgb(tmp_path / f"{i}.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"this is not an image")
    truncated = tmp_path / "truncated.png"
    data = noise_png(tmp_path / "whole.png")
    truncated.write_bytes(data[: len(data) // 2])
    (tmp_path / "whole.png").unlink()
    return corrupt, truncated


def test_unreadable_files_are_skipped_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    corrupt, truncated = bad_folder(tmp_path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # must not let it through
    ds = load_folder(tmp_path, cfg(tmp_path), progress=False)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored afterwards
    assert ds.info["images"] == 4
    assert sorted(ds.info["skipped"]) == [str(corrupt), str(truncated)]  # type: ignore[type-var]
    err = capsys.readouterr().err
    assert str(corrupt) in err and str(truncated) in err
    assert f"skipped 2 unreadable images in {tmp_path}" in err


@pytest.mark.parametrize("bad", ["corrupt.png", "truncated.png"])
def test_strict_makes_an_unreadable_file_an_error(tmp_path: Path, bad: str) -> None:
    bad_folder(tmp_path)
    other = {"corrupt.png": "truncated.png", "truncated.png": "corrupt.png"}[bad]
    (tmp_path / other).unlink()
    with pytest.raises(DataError, match=f"{tmp_path / bad}.*--strict"):
        load_folder(tmp_path, cfg(tmp_path, strict=True), progress=False)
    assert not list((tmp_path / ".vaekit-cache").glob("*.npy"))  # no half-written cache


def test_strict_also_applies_to_a_cache_built_without_it(tmp_path: Path) -> None:
    corrupt, _ = bad_folder(tmp_path)
    load_folder(tmp_path, cfg(tmp_path), progress=False)
    with pytest.raises(DataError, match="--strict"):
        load_folder(tmp_path, cfg(tmp_path, strict=True), progress=False)


def test_missing_empty_and_imageless_folders_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "nope", cfg(tmp_path), progress=False)
    with pytest.raises(DataError, match="holds no images"):
        load_folder(tmp_path, cfg(tmp_path), progress=False)
    for i in range(3):
        (tmp_path / f"{i}.txt").write_text("x")
    with pytest.raises(DataError, match="holds no images.*3 files with other extensions"):
        load_folder(tmp_path, cfg(tmp_path), progress=False)


def test_broken_link_is_named_as_unreadable(tmp_path: Path) -> None:
    for i in range(4):
        rgb(tmp_path / f"{i}.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    ds = load_folder(tmp_path, cfg(tmp_path), progress=False)
    assert ds.info["skipped"] == [str(tmp_path / "gone.png")]


def test_folder_with_no_readable_image_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"junk")
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="none of the 2 images"):
        load_folder(tmp_path, cfg(tmp_path), progress=False)


@pytest.mark.parametrize("limit", [1000, 2048])  # 64x64 is 4x, then exactly 2x, the limit
def test_decompression_bomb_is_refused_by_path(tmp_path: Path, limit: int) -> None:
    for i in range(4):
        rgb(tmp_path / f"small{i}.png", size=(16, 16))
    big = rgb(tmp_path / "big.png", size=(64, 64))
    before = Image.MAX_IMAGE_PIXELS
    ds = load_folder(tmp_path, cfg(tmp_path), progress=False, max_pixels=limit)
    assert Image.MAX_IMAGE_PIXELS == before
    assert ds.info["skipped"] == [str(big)] and ds.info["images"] == 4
    with pytest.raises(DataError, match=f"{big}: refused.*limit of {limit}"):
        load_folder(tmp_path, cfg(tmp_path, strict=True), progress=False, max_pixels=limit)
    with pytest.raises(DataError, match=f"{big}: refused"):
        decode_image(big, 8, max_pixels=limit)  # the header alone decides, outside the guard too
    assert load_folder(tmp_path, cfg(tmp_path), progress=False).info["images"] == 5


# ---- the cache --------------------------------------------------------------------------


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = images.decode_image

    def spy(path: Path, *args: object, **kw: object) -> np.ndarray:
        calls.append(Path(path).name)
        return real(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(images, "decode_image", spy)
    return calls


def shapes_folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in range(6):
        rgb(root / f"{i}.png", (i * 40, 0, 0))
    return root


def test_second_load_comes_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = shapes_folder(tmp_path)
    first = load_folder(root, cfg(root), progress=False)
    assert first.info["cache_hit"] is False
    assert Path(str(first.info["cache"])).parent == root / ".vaekit-cache"

    def boom(*args: object, **kw: object) -> None:
        raise AssertionError("decoded on a cache hit")

    monkeypatch.setattr(images, "decode_image", boom)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's warning on non-writable arrays
        second = load_folder(root, cfg(root), progress=False)
    assert second.info["cache_hit"] is True and second.info["ignored_non_images"] == 0
    assert torch.equal(second.x_train, first.x_train) and torch.equal(second.x_test, first.x_test)


def test_cache_is_invalidated_by_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = shapes_folder(tmp_path)
    calls = count_decodes(monkeypatch)
    load_folder(root, cfg(root), progress=False)
    assert len(calls) == 6

    st = (root / "3.png").stat()
    os.utime(root / "3.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    ds = load_folder(root, cfg(root), progress=False)
    assert ds.info["cache_hit"] is False and len(calls) == 12
    assert len(list((root / ".vaekit-cache").glob("*.npy"))) == 1  # the stale entry is gone

    rgb(root / "new.png")
    ds = load_folder(root, cfg(root), progress=False)
    assert ds.info["cache_hit"] is False and ds.info["images"] == 7

    (root / "new.png").unlink()
    assert load_folder(root, cfg(root), progress=False).info["images"] == 6

    ds = load_folder(root, cfg(root, image_size=4), progress=False)
    assert ds.info["cache_hit"] is False and ds.shape == (3, 4, 4)
    assert load_folder(root, cfg(root), progress=False).info["cache_hit"] is True  # 8x8 kept


def test_cache_dir_option_and_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = shapes_folder(tmp_path)
    ds = load_folder(root, cfg(root, cache_dir=str(tmp_path / "c")), progress=False)
    assert str(ds.info["cache"]).startswith(str(tmp_path / "c"))
    assert not (root / ".vaekit-cache").exists()

    (root / ".vaekit-cache").write_text("")  # beside the data is not usable: a file is there
    monkeypatch.setattr(Path, "home", lambda: tmp_path / "home")
    ds = load_folder(root, cfg(root), progress=False)
    assert str(ds.info["cache"]).startswith(str(tmp_path / "home" / ".cache" / "vaekit"))
    assert load_folder(root, cfg(root), progress=False).info["cache_hit"] is True


def test_large_cache_is_memory_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = shapes_folder(tmp_path)
    first = load_folder(root, cfg(root), progress=False)
    modes: list[object] = []
    real = np.load
    monkeypatch.setattr(
        folder_cache.np,
        "load",
        lambda *a, **kw: modes.append(kw.get("mmap_mode")) or real(*a, **kw),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = load_folder(root, cfg(root), progress=False, ram_budget=0)
        small = load_folder(root, cfg(root), progress=False)
    assert modes == ["c", "c", "c", None]  # the cache, then its train and test split files
    assert torch.equal(big.x_train, first.x_train) and torch.equal(small.x_train, first.x_train)
    assert torch.equal(big.x_test, first.x_test)
    # above the budget, train and test stay on disk: memory-mapped split files, not RAM copies
    splits = sorted(p.name for p in Path(str(first.info["cache"])).parent.glob("*-split-*.npy"))
    assert len(splits) == 2 and splits[0].endswith("-test.npy")
    assert _mapped_file(big.x_train.data_ptr()).endswith("-train.npy")
    assert _mapped_file(big.x_test.data_ptr()).endswith("-test.npy")


def _mapped_file(address: int) -> str:
    """The file mapped at `address` in this process (from /proc/self/maps), or ''."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split()
        lo, hi = (int(v, 16) for v in span.split("-"))
        if lo <= address < hi:
            return rest[-1] if len(rest) >= 5 else ""
    return ""


def test_a_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    root = shapes_folder(tmp_path)
    first = load_folder(root, cfg(root), progress=False)
    cache = Path(str(first.info["cache"]))
    for damage in (b"garbage", cache.read_bytes()[:200]):  # not an .npy; a truncated one
        cache.write_bytes(damage)
        again = load_folder(root, cfg(root), progress=False)
        assert again.info["cache_hit"] is False and torch.equal(again.x_train, first.x_train)


# ---- the demo data ----------------------------------------------------------------------


def load_make_shapes():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("make_shapes", ROOT / "scripts/make_shapes.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_make_shapes_writes_a_labelled_folder(tmp_path: Path) -> None:
    make_shapes = load_make_shapes().make_shapes
    assert make_shapes(tmp_path / "a", n=30, size=16, seed=1) == {
        "circle": 10,
        "square": 10,
        "triangle": 10,
    }
    ds = load_folder(tmp_path / "a", cfg(tmp_path / "a", image_size=16), progress=False)
    assert ds.class_names == ["circle", "square", "triangle"] and ds.info["images"] == 30
    y = torch.cat([ds.y_train, ds.y_test])  # type: ignore[list-item]
    assert torch.bincount(y).tolist() == [10, 10, 10]
    make_shapes(tmp_path / "b", n=30, size=16, seed=1)
    make_shapes(tmp_path / "c", n=30, size=16, seed=2)
    same = (tmp_path / "a/square/00001.png").read_bytes()
    assert (tmp_path / "b/square/00001.png").read_bytes() == same  # deterministic for a seed
    assert (tmp_path / "c/square/00001.png").read_bytes() != same


def test_make_shapes_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    load_make_shapes().main([str(tmp_path), "--n", "6", "--size", "8"])
    assert len(list(tmp_path.glob("*/*.png"))) == 6
    assert "wrote 6 images" in capsys.readouterr().out
    assert sys.modules.get("make_shapes") is None  # loaded from its path, not installed
