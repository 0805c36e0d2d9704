"""The ``package`` stage's config lives with the other stage configs (torch-free)."""

from __future__ import annotations

from compress.stages.configs import PackageConfig

__all__ = ["PackageConfig"]
