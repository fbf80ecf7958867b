"""Preallocated per-agent rows of one ``sample()`` call of :class:`LockstepMultiAgentEnvRunner`, and the helpers that
move them into episodes and modules.

Row ``k`` holds what happened at vector step ``k`` of the call, one column per env: the observation after the step
(or after the env's reset), the reward, the action that led to it and the module's outputs for that action (action
log-probability, distribution inputs, ...). Row 0 holds the observations the call starts from. The arrays grow by
doubling, so a call may run any number of steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class Rows:
    """Per-agent arrays of shape ``(capacity, num_envs, *item_shape)``.

    Args:
        first_obs: One observation per agent (its shape and dtype set the observation arrays').
        num_envs: Number of envs of the runner.
        capacity: Initial number of rows.
    """

    def __init__(self, first_obs: dict[str, np.ndarray], num_envs: int, capacity: int) -> None:
        self.num_envs = num_envs
        self.capacity = capacity
        self.obs = {aid: aligned_zeros((capacity, num_envs, *o.shape), o.dtype) for aid, o in first_obs.items()}
        self.rewards = {aid: np.zeros((capacity, num_envs), np.float64) for aid in first_obs}
        self._columns: dict[str, dict[str, np.ndarray]] = {aid: {} for aid in first_obs}
        self._keys: dict[str, dict[str, None]] = {aid: {} for aid in first_obs}

    def begin_call(self) -> None:
        """Forgets which model-output columns were written (a call may compute other outputs than the last one)."""
        for keys in self._keys.values():
            keys.clear()

    def keys(self, aid: str) -> list[str]:
        """The columns written for ``aid`` in this call, in the order of their first write."""
        return list(self._keys[aid])

    def column(self, aid: str, key: str) -> np.ndarray:
        """The array of column ``key`` (e.g. ``actions``, ``action_logp``) of agent ``aid``."""
        return self._columns[aid][key]

    def write(self, aid: str, key: str, k: int, envs: np.ndarray, everyone: bool, values: np.ndarray) -> None:
        """Writes ``values`` (one item per env in ``envs``) into row ``k`` of column ``key``."""
        column = self._columns[aid][key] if key in self._keys[aid] else self._column_for(aid, key, values[0])
        if everyone:
            column[k] = values
        else:
            column[k, envs] = values

    def write_one(self, aid: str, key: str, k: int, env: int, value: np.ndarray) -> None:
        """Writes one env's item into row ``k`` of column ``key``."""
        self._column_for(aid, key, value)[k, env] = value

    def _column_for(self, aid: str, key: str, item: np.ndarray) -> np.ndarray:
        column = self._columns[aid].get(key)
        if column is None or column.shape[2:] != np.shape(item) or column.dtype != item.dtype:
            column = np.zeros((self.capacity, self.num_envs, *np.shape(item)), item.dtype)
            self._columns[aid][key] = column
        self._keys[aid][key] = None
        return column

    def ensure(self, k: int) -> None:
        """Makes row ``k`` exist (doubling the capacity when needed)."""
        if k < self.capacity:
            return
        new_capacity = max(2 * self.capacity, k + 1)

        def grow(a: np.ndarray, zeros=np.zeros) -> np.ndarray:
            bigger = zeros((new_capacity, *a.shape[1:]), a.dtype)
            bigger[: self.capacity] = a
            return bigger

        self.obs = {aid: grow(a, aligned_zeros) for aid, a in self.obs.items()}
        self.rewards = {aid: grow(a) for aid, a in self.rewards.items()}
        self._columns = {aid: {key: grow(a) for key, a in cols.items()} for aid, cols in self._columns.items()}
        self.capacity = new_capacity

    def move_row(self, src: int, dst: int) -> None:
        """Copies the observations of row ``src`` to row ``dst`` (the start of the next call)."""
        for a in self.obs.values():
            a[dst] = a[src]


def aligned_zeros(shape: tuple, dtype: Any, alignment: int = 64) -> np.ndarray:
    """Zeros of ``shape`` whose every row ``a[k]`` starts at a multiple of ``alignment`` bytes.

    The row blocks go to the modules as they are (no copy). Matrix products on a CPU take another code path for
    inputs that are not 16-byte aligned, whose results differ in the last bits; RLlib's runner hands the modules
    freshly allocated (aligned) arrays, so the rows must be aligned for both runners to compute the same actions.
    """
    dtype = np.dtype(dtype)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    stride = -(-row_bytes // alignment) * alignment  # round up to the alignment
    raw = np.zeros(shape[0] * stride + alignment, np.uint8)
    offset = -raw.ctypes.data % alignment
    rows = raw[offset : offset + shape[0] * stride].reshape(shape[0], stride)[:, :row_bytes]
    return rows.view(dtype).reshape(shape)


def as_module_input(obs: np.ndarray, device: Any) -> torch.Tensor:
    """A batch of observations as RLlib's ``NumpyToTensor`` hands it to a module (floats as float32)."""
    tensor = torch.from_numpy(obs)
    if tensor.dtype != torch.float32 and tensor.is_floating_point() and tensor.dtype != torch.float16:
        tensor = tensor.float()
    if device is not None and device.type != "cpu":
        tensor = tensor.to(device)
    return tensor


def extend_buffer(buffer: Any, values: np.ndarray) -> None:
    """Appends ``values`` (one item per step) to an episode's ``InfiniteLookbackBuffer`` as one numpy array.

    The buffer may hold a list (what ``add_env_reset`` or RLlib's ``cut`` put there: the reset item, or the lookback
    items and the last item) or an array. The result is the array ``to_numpy()`` would have built, marked finalized.
    """
    data = buffer.data
    if isinstance(data, list):
        data = np.asarray(data, dtype=values.dtype) if data else None
    buffer.data = values.copy() if data is None or len(data) == 0 else np.concatenate([data, values])
    buffer.finalized = True


__all__ = ["Rows", "as_module_input", "extend_buffer"]
