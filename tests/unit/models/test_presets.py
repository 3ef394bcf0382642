"""The shipped presets (raytrack.models.presets)."""

from __future__ import annotations

from raytrack.models import load_presets


def test_presets_are_the_earlier_five_plus_three():
    presets = load_presets()
    assert {k: list(v.hidden) for k, v in presets.items()} == {
        "tiny": [64, 64],
        "small": [128, 128, 64],
        "large": [512, 512, 256, 128],
        "xlarge": [1024, 512, 256, 128],
        "deep": [256, 256, 256, 256, 128],
        "ultra": [1024, 1024, 512, 256, 128],
        "wide": [2048, 1024, 512, 256],
        "trigger": [74, 74, 44],
    }
    # The GPU-trigger preset fits 64 KB of constant memory with its field tables.
    assert presets["trigger"].weight_count <= 16384
