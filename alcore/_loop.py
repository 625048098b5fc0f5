"""The epoch loop shared by the self-supervised trainers (SimCLR, rotation): a seeded order per
epoch, one optimiser step per batch, a per-step cosine decay of the learning rate to 0."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm


def cosine_epochs(
    opt: torch.optim.Optimizer,
    batch_loss: Callable[[np.ndarray], torch.Tensor],
    *,
    n: int,
    n_batches: int,
    epochs: int,
    gen: torch.Generator,
    desc: str,
    fix: str,
    progress: bool,
    loss_history: list[float] | None,
) -> None:
    """Run ``epochs`` passes over ``n`` samples in ``n_batches`` batches.

    ``batch_loss(sorted_positions)`` returns the batch's scalar loss; this function steps the
    optimiser and the schedule. A non-finite loss raises ``FloatingPointError`` ending in ``fix``.
    The mean loss of every epoch is appended to ``loss_history`` when given.
    """
    total = epochs * n_batches
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    )
    bar = tqdm(total=total, desc=desc, unit="step", disable=not progress, leave=False)
    try:
        for _epoch in range(epochs):
            order = torch.randperm(n, generator=gen).numpy()
            running = None
            for positions in np.array_split(order, n_batches):
                loss = batch_loss(np.sort(positions))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{desc} loss is {loss.item()}; {fix}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running = loss.detach() if running is None else running + loss.detach()
                bar.update(1)
                if bar.n % 10 == 0 or bar.n == total:
                    bar.set_postfix(loss=f"{loss.item():.3f}")
            if loss_history is not None and running is not None:
                loss_history.append(float(running) / n_batches)
    finally:
        bar.close()
