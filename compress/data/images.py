"""Images as the preprocessing record says (``compress/config/preprocess.py``): the record each
built-in image source writes, and the PIL implementation of its rule that the image-folder source
trains on. ``compress/bundle/runner.py`` holds the same rule as a deliberate standalone copy (it
imports nothing from compress); tests check the two agree pixel for pixel.

Why the digits record reads as it does (measured on scikit-learn's 1,797 digits): the images are
8x8 values 0..16 with white ink on a black background; the outer ring's mean is 0.17 of the range
over all images and at most 0.30 for any one, the centre's 0.52. So ``invert: auto`` (invert when
the border's mean is above half the range) never fires on the data itself and does fire on a
dark-ink-on-paper photo. The source divides by 16 and upsamples bilinearly; an 8-bit file pixel
``p`` maps to the same 0..1 by ``p / 255``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.config.preprocess import AUTO_INVERT_ABOVE, BORDER_FRACTION, ImagePreprocess
from compress.errors import InputError

if TYPE_CHECKING:
    import torch

    from compress.config.data import _Source

DIGITS_NOTE = ("scikit-learn digits: 8x8 values 0..16, white ink on black, divided by 16 and "
               "upsampled bilinearly (torch, align_corners=False) to size, then (v - 0.5) / 0.5; "
               "an 8-bit pixel p maps to the same 0..1 by p / 255")


def digits_record(size: int) -> ImagePreprocess:
    return ImagePreprocess(color="grayscale", size=(size, size), resize="stretch",
                           interpolation="bilinear", invert="auto", scale=1 / 255, mean=[0.5],
                           std=[0.5], note=DIGITS_NOTE)


def folder_record(size: int, channels: int) -> ImagePreprocess:
    return ImagePreprocess(color="grayscale" if channels == 1 else "rgb", size=(size, size),
                           resize="stretch", interpolation="bilinear", invert="never",
                           scale=1 / 255, mean=[0.5] * channels, std=[0.5] * channels,
                           note="image_folder: PIL decode, resize as recorded, p / 255, "
                                "(v - 0.5) / 0.5")


def npz_record(x: np.ndarray) -> ImagePreprocess | None:
    """The record of npz arrays used as stored: only when they are 8-bit pixels (integers
    0..255, NCHW with 1 or 3 channels) does 'scale 1, mean 0, std 1' map a photo the same way;
    for anything else the arrays cannot say how a photo maps (None: state data.preprocess)."""
    c, h, w = x.shape[1:]
    ints = x.size > 0 and float(x.min()) >= 0 and float(x.max()) <= 255 \
        and bool(np.all(np.equal(np.mod(x, 1), 0)))
    if c not in (1, 3) or not ints:
        return None
    return ImagePreprocess(color="grayscale" if c == 1 else "rgb", size=(h, w), resize="stretch",
                           interpolation="bilinear", invert="never", scale=1.0, mean=[0.0] * c,
                           std=[1.0] * c, note="npz: 8-bit pixel arrays used as stored")


def _pil_filter(name: str):
    from PIL import Image

    return {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[name]


def _needs_invert(img, rec: ImagePreprocess) -> bool:
    if rec.invert != "auto":
        return rec.invert == "always"
    a = np.asarray(img.convert("L"), dtype=np.float64)
    h, w = a.shape
    bh, bw = max(1, int(h * BORDER_FRACTION)), max(1, int(w * BORDER_FRACTION))
    mask = np.ones_like(a, dtype=bool)
    mask[bh:h - bh, bw:w - bw] = False
    return float(a[mask].mean()) > AUTO_INVERT_ABOVE * 255


def _resize_band(band, rec: ImagePreprocess):
    """One band as float (mode F: no 8-bit rounding after the resize), resized and cropped."""
    band, h, w = band.convert("F"), *rec.size
    if rec.resize == "stretch":
        return band.resize((w, h), _pil_filter(rec.interpolation))
    short, (iw, ih) = rec.resize_shorter, band.size
    nw, nh = (short, max(short, round(ih * short / iw))) if iw <= ih else \
        (max(short, round(iw * short / ih)), short)
    band = band.resize((nw, nh), _pil_filter(rec.interpolation))
    left, top = (nw - w) // 2, (nh - h) // 2
    return band.crop((left, top, left + w, top + h))


def apply_image(img, rec: ImagePreprocess) -> np.ndarray:
    """One PIL image as one model input sample (no batch axis), float32."""
    from PIL import ImageOps

    img = img.convert("L" if rec.color == "grayscale" else "RGB")
    if _needs_invert(img, rec):
        img = ImageOps.invert(img)
    x = np.stack([np.asarray(_resize_band(b, rec), dtype=np.float32) for b in img.split()], -1)
    x = (x * np.float32(rec.scale) - np.asarray(rec.mean, np.float32)) / np.asarray(rec.std,
                                                                                   np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1) if rec.layout == "NCHW" else x,
                                dtype=np.float32)


def load_image(path: Path, rec: ImagePreprocess) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return apply_image(img, rec)


# -- the built-in image sources ------------------------------------------------------------

def digits(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as the record says: / 16, bilinear upsampling, (v - 0.5) / 0.5."""
    import torch
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - 0.5) / 0.5, torch.tensor(d.target, dtype=torch.long)


def npz(cfg: _Source, where: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs (and labels, for a DataConfig) of an .npz file, used as stored."""
    import torch

    from compress.config.data import DataConfig

    path = Path(cfg.path)
    if not path.is_file():
        raise InputError(f"{where}.path: file not found: {path}")
    try:
        arrays = np.load(path, allow_pickle=False)
    except Exception as e:  # np.load raises several types for a bad file
        raise InputError(f"{where}.path: cannot read {path} as .npz ({type(e).__name__})") from e
    if cfg.x_key not in arrays:
        raise InputError(f"{where}.x_key: {path} has no array {cfg.x_key!r} (has {sorted(arrays)})")
    x = np.asarray(arrays[cfg.x_key], dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise InputError(f"{where}.x_key: expected (N, C, H, W) or (N, H, W), got shape {list(x.shape)}")
    y = None
    if isinstance(cfg, DataConfig):
        if cfg.y_key not in arrays:
            raise InputError(f"{where}.y_key: {path} has no array {cfg.y_key!r} (has {sorted(arrays)})")
        y = np.asarray(arrays[cfg.y_key])
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise InputError(
                f"{where}.y_key: expected {x.shape[0]} non-negative integer labels, "
                f"got shape {list(y.shape)} of {y.dtype}"
            )
        y = torch.from_numpy(y.astype(np.int64))
    return torch.from_numpy(x), y


def image_folder(cfg: _Source, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One subfolder per class, each image preprocessed by the record's own rule."""
    import torch

    root = Path(cfg.path)
    if not root.is_dir():
        raise InputError(f"{where}.path: not a directory: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir()) if f.is_file()]
    if not classes or not files:
        raise InputError(f"{where}.path: {root} needs one subfolder of images per class")
    rec, xs = folder_record(cfg.image_size, cfg.channels), []
    for f, _ in files:
        try:
            xs.append(load_image(f, rec))  # the record's own rule, as the runner applies it
        except OSError as e:
            raise InputError(f"{where}.path: cannot read image {f} ({e})") from e
    return torch.from_numpy(np.stack(xs)), torch.tensor([i for _, i in files], dtype=torch.long)
