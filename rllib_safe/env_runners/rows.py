"""Preallocated rows of one ``sample()`` call of :class:`LockstepMultiAgentEnvRunner`.

Row ``k`` holds what happened at vector step ``k`` of the call, one column per env: the observation after the step
(or after the env's reset), the reward, the action that led to it and the module's outputs for that action (action
log-probability, distribution inputs, ...). Row 0 holds the observations the call starts from. The arrays grow by
doubling, so a call may run any number of steps. Also the helpers that move rows into modules and episodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class Rows:
    """Per-agent rows, stored in blocks: one block per group of agents whose modules run as one batch.

    An observation block has shape ``(capacity, group size, num_envs, largest observation size)`` (agents with
    smaller observations leave the tail at zero) and every row of it starts 64-byte aligned; a model-output block
    (``actions``, ``action_logp``, ...) has shape ``(capacity, group size, num_envs, *item_shape)``. ``obs[agent]``,
    ``rewards[agent]`` and :meth:`column` give an agent's view ``(capacity, num_envs, ...)``.

    Args:
        first_obs: One observation per agent (its shape and dtype set the observation arrays').
        num_envs: Number of envs of the runner.
        capacity: Initial number of rows.
        groups: The agent groups (default: one group per agent); observations of a group must be 1-D with one dtype.
    """

    def __init__(
        self, first_obs: dict[str, np.ndarray], num_envs: int, capacity: int, groups: list[list[str]] | None = None
    ) -> None:
        self.num_envs = num_envs
        self.capacity = capacity
        self.groups = groups or [[aid] for aid in first_obs]
        self.block_of = {aid: (b, j) for b, group in enumerate(self.groups) for j, aid in enumerate(group)}
        self._shapes = {aid: np.shape(o) for aid, o in first_obs.items()}
        self._dtypes = {aid: np.asarray(o).dtype for aid, o in first_obs.items()}
        self.blocks = [self._new_block(group, capacity) for group in self.groups]
        self.rewards = {aid: np.zeros((capacity, num_envs), np.float64) for aid in first_obs}
        self._outputs: list[dict[str, np.ndarray]] = [{} for _ in self.groups]
        self._written: list[dict[str, None]] = [{} for _ in self.groups]
        self._make_views()

    def _new_block(self, group: list[str], capacity: int) -> np.ndarray:
        if len(group) == 1:
            (aid,) = group
            return aligned_zeros((capacity, 1, self.num_envs, *self._shapes[aid]), self._dtypes[aid])
        width = max(self._shapes[aid][0] for aid in group)
        return aligned_zeros((capacity, len(group), self.num_envs, width), self._dtypes[group[0]])

    def _make_views(self) -> None:
        self.obs = {}
        for aid, (b, j) in self.block_of.items():
            view = self.blocks[b][:, j]
            self.obs[aid] = view if len(self.groups[b]) == 1 else view[..., : self._shapes[aid][0]]
        self.obs = {aid: self.obs[aid] for aid in self._shapes}  # the env's order of agents

    def begin_call(self) -> None:
        """Forgets which model outputs were written (a call may compute other outputs than the last one)."""
        for written in self._written:
            written.clear()

    def keys(self, aid: str) -> list[str]:
        """The model-output columns written for ``aid`` in this call, in the order of their first write."""
        return list(self._written[self.block_of[aid][0]])

    def column(self, aid: str, key: str) -> np.ndarray:
        """Agent ``aid``'s view ``(capacity, num_envs, *item_shape)`` of model output ``key``."""
        b, j = self.block_of[aid]
        return self._outputs[b][key][:, j]

    def write(self, block: int, key: str, k: int, envs: np.ndarray, everyone: bool, values: np.ndarray) -> None:
        """Writes a block's outputs ``values`` of shape ``(group size, len(envs), *item_shape)`` into row ``k``."""
        column = self._outputs[block][key] if key in self._written[block] else self._output(block, key, values[0, 0])
        if everyone:
            column[k] = values
        else:
            column[k][:, envs] = values

    def write_one(self, aid: str, key: str, k: int, env: int, value: np.ndarray) -> None:
        """Writes one env's item of agent ``aid`` into row ``k`` of model output ``key``."""
        b, j = self.block_of[aid]
        self._output(b, key, value)[k, j, env] = value

    def _output(self, block: int, key: str, item: np.ndarray) -> np.ndarray:
        column = self._outputs[block].get(key)
        if column is None or column.shape[3:] != np.shape(item) or column.dtype != item.dtype:
            shape = (self.capacity, len(self.groups[block]), self.num_envs, *np.shape(item))
            column = self._outputs[block][key] = np.zeros(shape, item.dtype)
        self._written[block][key] = None
        return column

    def ensure(self, k: int) -> None:
        """Makes row ``k`` exist (doubling the capacity when needed)."""
        if k < self.capacity:
            return
        new_capacity = max(2 * self.capacity, k + 1)

        def grow(a: np.ndarray, zeros: Any = np.zeros) -> np.ndarray:
            bigger = zeros((new_capacity, *a.shape[1:]), a.dtype)
            bigger[: self.capacity] = a
            return bigger

        self.blocks = [grow(block, aligned_zeros) for block in self.blocks]
        self.rewards = {aid: grow(a) for aid, a in self.rewards.items()}
        self._outputs = [{key: grow(a) for key, a in outputs.items()} for outputs in self._outputs]
        self.capacity = new_capacity
        self._make_views()

    def move_row(self, src: int, dst: int) -> None:
        """Copies the observations of row ``src`` to row ``dst`` (the start of the next call)."""
        for block in self.blocks:
            block[dst] = block[src]


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


__all__ = ["Rows", "aligned_zeros", "as_module_input", "extend_buffer"]
