"""The preprocessing record: how raw input (an image file, a camera frame, a sentence) becomes
the model's input. One typed record, written by every data source, stated in the YAML
(``data.preprocess:``) or returned by a ``python:`` factory, copied into every bundle as
``preprocess.json`` and read there by the runner, the web page and the app notes.

Torch-free: ``compress validate`` checks a stated record without importing torch.

Image rule, in order (the runner and ``compress.data.images.apply_image`` follow it alike):

1. decode the file; convert to ``color`` (``grayscale``: PIL mode L; ``rgb``: mode RGB);
2. ``invert``: ``never``, ``always``, or ``auto`` (invert when the mean of the image's outer
   border, the outermost eighth of rows and columns, is above half the 8-bit range: a
   dark-on-light photo of what the data shows light-on-dark);
3. resize to ``size`` = (height, width) with ``interpolation`` (PIL's resize: antialiased when
   shrinking; when enlarging, bilinear equals torch's ``interpolate(align_corners=False)``):
   ``stretch`` resizes straight to ``size``; ``shorter_side_center_crop`` first scales the shorter
   side to ``resize_shorter`` (keeping the aspect ratio), then crops the centre ``size``;
4. ``v = pixel * scale`` for 8-bit pixel values 0..255, then ``(v - mean[c]) / std[c]`` per channel;
5. lay out as ``layout`` (``NCHW``: channels first) with a batch axis of 1, float32.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PREPROCESS_VERSION = 1
BORDER_FRACTION = 1 / 8  # invert: auto looks at this share of rows and columns on each side
AUTO_INVERT_ABOVE = 0.5  # ... and inverts when their mean is above this share of 255


class ImagePreprocess(BaseModel):
    """How an image file or camera frame becomes the model input (see the module's rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["image"] = Field("image", description="Always 'image'.")
    input: str = Field("input", description="The model input the image feeds.")
    layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="Axis order of the input.")
    color: Literal["grayscale", "rgb"] = Field(description="grayscale: 1 channel; rgb: 3, in "
                                                           "R, G, B order.")
    size: tuple[int, int] = Field(description="(height, width) of the model input.")
    resize: Literal["stretch", "shorter_side_center_crop"] = Field(
        description="stretch: straight to size; shorter_side_center_crop: shorter side to "
                    "resize_shorter, aspect kept, then the centre crop of size.")
    resize_shorter: int | None = Field(
        None, gt=0, description="shorter_side_center_crop: the shorter side's length before the "
                                "crop (at least the larger of size).")
    interpolation: Literal["bilinear", "bicubic", "nearest"] = Field(
        "bilinear", description="PIL resampling filter of the resize.")
    invert: Literal["never", "always", "auto"] = Field(
        "never", description="auto: invert (255 - p) when the image's border is light.")
    scale: float = Field(gt=0, description="Multiplies each 8-bit pixel value (0..255).")
    mean: list[float] = Field(description="Per channel, subtracted after scale.")
    std: list[float] = Field(description="Per channel, divides after the mean.")
    note: str = Field("", description="What the data source did, in words (not read by code).")

    @property
    def channels(self) -> int:
        return 1 if self.color == "grayscale" else 3

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One sample's shape as the model takes it (no batch axis)."""
        h, w = self.size
        return (self.channels, h, w) if self.layout == "NCHW" else (h, w, self.channels)

    @model_validator(mode="after")
    def _consistent(self):
        n = self.channels
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(f"mean and std need one value per channel ({n} for {self.color}), "
                             f"got {len(self.mean)} and {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        if min(self.size) <= 0:
            raise ValueError(f"size must be positive (height, width), got {list(self.size)}")
        if self.resize == "shorter_side_center_crop":
            if self.resize_shorter is None:
                raise ValueError("resize shorter_side_center_crop needs resize_shorter")
            if self.resize_shorter < max(self.size):
                raise ValueError(f"resize_shorter {self.resize_shorter} is smaller than the crop "
                                 f"{list(self.size)}")
        return self


class TextPreprocess(BaseModel):
    """How a sentence becomes ``input_ids`` and ``attention_mask`` (and ``token_type_ids``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["text"] = Field("text", description="Always 'text'.")
    tokenizer: str = Field("tokenizer.json", description="The tokenizers-library file that "
                                                         "encodes a sentence (in the bundle).")
    tokenizer_files: list[str] = Field(description="Every tokenizer file the bundle ships.")
    max_length: int = Field(gt=1, description="Tokens kept per sentence (truncation).")
    padding: Literal["longest", "max_length"] = Field(
        description="longest: pad to the longest sentence of one call (one sentence: no "
                    "padding); max_length: every sentence padded to max_length.")
    pad_side: Literal["right"] = Field("right", description="Where padding tokens go.")
    note: str = Field("", description="What the data source did, in words (not read by code).")


Preprocess = ImagePreprocess | TextPreprocess
