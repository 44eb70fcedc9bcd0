"""The batches a trial trains on, in two feeds with one order.

* :class:`Batches` (the host feed) reads each batch's rows from the memory-mapped cache and
  converts them to float32 in Python: no copy of the cache, right for the CPU.
* :class:`DeviceBatches` (the device feed) places the split's uint8 rows on the device once
  and draws each batch there with ``keras.ops.take``; the float conversion, scaling and
  augmentation then happen inside the compiled model. Right for a GPU, where the host
  feed's milliseconds of Python per batch would be the whole cost of a step.

Both draw the same rows in the same order for the same seed (:meth:`Batches.epoch_rows`), so
a trial's result does not depend on which feed ran it. With ``full_batches`` the last batch
of an epoch is topped up to the full batch size with the epoch's first rows: XLA compiles
a step once per input shape, and a smaller last batch is a second compile of the train step
(on CPU JAX a small trial's first-epoch compile 15.3 s with it, 7.5 s without:
bench/bench_compile_cache.py). Only ``keras.*`` is used: the device feed runs on JAX and
PyTorch alike.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from hpo.data import Split
from hpo.errors import OutOfMemory, first_line, is_out_of_memory
from hpo.head import loss_targets


class DeviceOutOfMemory(OutOfMemory):
    """The split's images did not fit on the device; the trial fails alone, as a GPU OOM."""


class Batches(keras.utils.PyDataset):
    """Keras-facing batches of a :class:`Split`, reshuffled each epoch when training."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        binary: bool,
        shuffle: bool,
        seed: int = 0,
        full_batches: bool = False,
    ) -> None:
        super().__init__()
        self.split, self.batch_size, self.shuffle = split, int(batch_size), shuffle
        self._binary, self.full_batches = binary, full_batches
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(split))
        self._rows = self.epoch_rows()
        self.load()

    def load(self) -> None:
        """Get the split ready to draw batches from; the host feed reads the memory-mapped
        cache as it goes, so there is nothing to load."""

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    @property
    def rows(self) -> np.ndarray:
        """This epoch's rows of the cache in feeding order (fixed when not shuffling)."""
        return self._rows

    def epoch_rows(self) -> np.ndarray:
        """This epoch's rows of the cache in feeding order: a fresh shuffle when training,
        sorted within each batch (sorted rows read a memmap sequentially); with
        ``full_batches``, the last batch ends with this epoch's first rows again."""
        if self.shuffle:
            self._rng.shuffle(self._order)
        rows = self.split.rows[self._order]
        if self.full_batches:
            rows = np.resize(rows, len(self) * self.batch_size)  # cycles: first rows again
        batch = np.arange(len(rows)) // self.batch_size
        return rows[np.lexsort((rows, batch))]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows[index * self.batch_size : (index + 1) * self.batch_size]
        x = np.asarray(self.split.images[rows], dtype="float32")
        return x, self.targets(np.asarray(self.split.labels[rows]))

    def targets(self, labels: np.ndarray) -> np.ndarray:
        """Labels shaped for the loss: (N, 1) float32 for the sigmoid head, int32 otherwise."""
        return loss_targets(labels, self._binary)

    def on_epoch_end(self) -> None:
        self._rows = self.epoch_rows()


class DeviceBatches(Batches):
    """The same batches as :class:`Batches`, drawn from a copy of the split on the device.

    Per epoch one index array goes to the device; per batch, one slice and one gather run
    there. The images stay uint8 (a quarter of float32's memory) until the model casts them.
    """

    def load(self) -> None:
        """Place the split's images and labels on the device, once per trial."""
        split = self.split
        self._resident = np.unique(split.rows)  # sorted: the cache is read front to back once
        megabytes = len(self._resident) * int(np.prod(split.images.shape[1:])) / 2**20
        try:
            self._images = keras.ops.convert_to_tensor(np.asarray(split.images[self._resident]))
            self._labels = keras.ops.convert_to_tensor(
                self.targets(np.asarray(split.labels[self._resident]))
            )
        except Exception as exc:  # noqa: BLE001 - only memory is re-raised as a new error
            if not is_out_of_memory(exc):
                raise
            raise DeviceOutOfMemory(
                f"out of memory placing {megabytes:.0f} MiB of uint8 images on the device "
                f'for the device feed; set [train] feed = "host" ({first_line(exc)[:200]})'
            ) from exc
        self._index = self._device_index()

    def _device_index(self) -> Any:
        return keras.ops.convert_to_tensor(
            np.searchsorted(self._resident, self._rows).astype("int32")
        )

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        at = self._index[index * self.batch_size : (index + 1) * self.batch_size]
        return keras.ops.take(self._images, at, axis=0), keras.ops.take(self._labels, at, axis=0)

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        self._index = self._device_index()


def feed_batches(feed: str) -> type[Batches]:
    """The batches of the ``"device"`` or ``"host"`` feed (both take the same arguments)."""
    return DeviceBatches if feed == "device" else Batches
