"""Presets shipped with vaekit (found by name: `--config fashion-mlp`)."""
