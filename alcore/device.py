"""One ``device`` parameter: ``auto`` picks CUDA when present (with bf16 autocast there)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from alcore.errors import ConfigError, problem


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` as given."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            problem(f"device={device!r} is not a device", "auto, cpu, cuda, cuda:N", "set device: auto")
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            problem(
                f"device={device!r} but no CUDA device is visible",
                "auto, cpu",
                "set device: auto (uses CUDA when present) or cpu",
            )
        )
    return dev


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """Mixed precision (bf16) on CUDA; a no-op elsewhere."""
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Limit torch's intra-op threads to ``n`` (``None``: leave as is), restoring them after.

    Parallel workers on one machine each take their share of the cores (two workers with all
    cores each would oversubscribe them).
    """
    if n is None:
        yield
        return
    if n < 1:
        raise ConfigError(problem(f"threads={n}", "None or an integer >= 1"))
    before = torch.get_num_threads()
    if before == n:  # nothing to change, nothing to restore (parts on threads of one process enter this at once)
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
