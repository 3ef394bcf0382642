"""Checking a torch device named on the command line before anything starts."""

from __future__ import annotations

import torch


def check_device(device: str, option: str = "--device") -> None:
    """Raise ``ValueError`` naming ``option`` unless ``device`` (cpu, cuda, cuda:N) is usable
    by this process's torch; torch's own answer is an AssertionError deep in training."""
    try:
        kind = torch.device(device)
    except RuntimeError:
        raise ValueError(f"{option} {device}: not a device; use cpu or cuda") from None
    if kind.type == "cpu":
        return
    if kind.type != "cuda":
        raise ValueError(f"{option} {device}: raytrack runs on cpu or cuda")
    if not torch.backends.cuda.is_built():
        raise ValueError(
            f"{option} {device}: this torch ({torch.__version__}) is a CPU-only build; "
            f"use {option} cpu, or install a CUDA build of torch"
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(
            f"{option} {device}: torch sees no CUDA device on this machine "
            f"(driver missing or CUDA_VISIBLE_DEVICES empty); use {option} cpu"
        )
    if kind.index is not None and kind.index >= count:
        raise ValueError(f"{option} {device}: only {count} CUDA device(s) here (cuda:0..)")
