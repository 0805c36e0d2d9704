"""A ``python:`` data factory as a user writes one: RGB photo crops (scikit-learn's two sample
photos, china and flower) preprocessed ImageNet-style in torch (shorter side to 256, centre crop
224, mean/std), returned with the preprocessing record that says so."""

from __future__ import annotations

import numpy as np

from compress.config.preprocess import ImagePreprocess

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
RECORD = ImagePreprocess(color="rgb", size=(224, 224), resize="shorter_side_center_crop",
                         resize_shorter=256, interpolation="bilinear", scale=1 / 255, mean=MEAN,
                         std=STD, note="ImageNet-style: shorter side 256, centre crop 224")


def transform(pixels: np.ndarray):
    """(H, W, 3) uint8 -> (3, 224, 224) float tensor, the way this factory trains (torch)."""
    import torch

    x = torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float()[None] / 255
    ih, iw = pixels.shape[:2]
    nh, nw = (max(256, round(ih * 256 / iw)), 256) if iw <= ih else \
        (256, max(256, round(iw * 256 / ih)))
    x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True,
                                        align_corners=False)
    top, left = (nh - 224) // 2, (nw - 224) // 2
    x = x[0, :, top:top + 224, left:left + 224]
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def _crops(n: int, seed: int):
    import torch
    from sklearn.datasets import load_sample_images
    from torch.utils.data import TensorDataset

    photos, rng = load_sample_images().images, np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(n):
        label = k % 2
        img = photos[label]
        h, w = img.shape[:2]
        s = rng.uniform(0.45, 1.0)
        ch, cw = int(h * s), int(w * s * rng.uniform(0.8, 1.2))
        cw = min(cw, w)
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = img[top:top + ch, left:left + cw]
        xs.append(transform(crop[:, ::-1] if rng.random() < 0.5 else crop))
        ys.append(label)
    return TensorDataset(torch.stack(xs), torch.tensor(ys))


def photos(n_train: int = 24, with_record: bool = True) -> dict:
    out = {"train": _crops(n_train, 0), "val": _crops(8, 1), "test": _crops(8, 2),
           "classes": ["china", "flower"]}
    if with_record:
        out["preprocess"] = RECORD
    return out
