"""Built-in architectures, user factories and checkpoint loading."""

from compress.models.build import build_model, load_checkpoint_, model_summary

__all__ = ["build_model", "load_checkpoint_", "model_summary"]
