"""Group ids for verl's `uid` column: the one place that turns arbitrary labels into 0..n-1."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def group_ids(index: Any, device: torch.device | str | None = None) -> tuple[torch.Tensor, int]:
    """Map group labels (verl's `uid`: numpy array / list / tensor of str or int) to dense ids.

    Args:
        index: `(np.ndarray | list | torch.Tensor)` shape (bs,), one group label per row.
        device: device of the returned tensor (default cpu).

    Returns:
        gid: `(torch.LongTensor)` shape (bs,), values in 0..n_groups-1 (sorted label order).
        n_groups: `(int)` number of distinct labels.
    """
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    labels = np.asarray(index)
    if labels.ndim != 1:
        raise ValueError(f"index must be 1-D (one group label per row), got shape {labels.shape}")
    try:
        uniq, inverse = np.unique(labels, return_inverse=True)
    except TypeError:  # mixed label types (e.g. str and int in one object array): compare as str
        uniq, inverse = np.unique(labels.astype(str), return_inverse=True)
    gid = torch.from_numpy(inverse.reshape(-1).astype(np.int64, copy=False))
    return gid.to(device) if device is not None else gid, len(uniq)
