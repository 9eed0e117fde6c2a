"""Random-access sources of examples that are read on demand, never whole: for data sets
beyond memory (``data.pipeline = 'stream'``) and for sizing a set before it is loaded.

A ``LazyArray`` is an (N, ...) array whose rows are read when indexed (an int, a slice or an
array of indices), pre-processed by a function of the rows; ``np.asarray`` of it reads every
row (the resident path). Its rows come from

* ``NpyMember``: one array of a NumPy ``.npz`` (or ``.npy``) file stored uncompressed (``np.savez``),
  read with ``os.pread`` at the row's byte offset: no memory map, so the pages read are the
  page cache's, not the process's resident memory;
* ``TfdsColumn``: one feature of a TensorFlow Datasets split prepared as ``array_record``
  files, through ``tfds.data_source`` (random access, no TensorFlow; PNG images decoded by PIL).
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np


class LazyArray:
  """(N, ...) rows read on demand: ``read(indices) -> rows`` for a 1-D int array of indices;
  ``transform(rows) -> rows`` pre-processes what was read (rescaling, flattening)."""

  def __init__(self, read: Callable[[np.ndarray], np.ndarray], shape: tuple, dtype,
               transform: Callable[[np.ndarray], np.ndarray] | None = None):
    self._read, self.shape, self.dtype = read, tuple(shape), np.dtype(dtype)
    self._transform = transform

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  @property
  def nbytes(self) -> int:
    return math.prod(self.shape) * self.dtype.itemsize

  def with_transform(self, transform: Callable[[np.ndarray], np.ndarray], shape: tuple,
                     dtype) -> LazyArray:
    """The same rows, then ``transform`` (after this array's own), of ``shape`` and ``dtype``."""
    first = self._transform
    combined = transform if first is None else (lambda rows: transform(first(rows)))
    return LazyArray(self._read, shape, dtype, combined)

  def __getitem__(self, key) -> np.ndarray:
    if isinstance(key, tuple):  # rows first, then the rest on the rows read
      return self[key[0]][(slice(None), *key[1:])]
    if isinstance(key, (int, np.integer)):
      return self[np.asarray([key])][0]
    if isinstance(key, slice):
      indices = np.arange(*key.indices(len(self)))
    else:
      indices = np.asarray(key)
      if indices.dtype == bool:
        indices = np.flatnonzero(indices)
      indices = np.where(indices < 0, indices + len(self), indices)
    rows = self._read(indices.astype(np.int64))
    return rows if self._transform is None else self._transform(rows)

  def __array__(self, dtype=None, copy=None):
    out = self[:]
    return out if dtype is None else out.astype(dtype)

  def chunks(self, size: int):
    """The rows in order, ``size`` at a time (for one pass over a set beyond memory)."""
    for start in range(0, len(self), size):
      yield self[start:start + size]


class NpyMember:
  """One array of an uncompressed ``.npz`` (or a ``.npy`` file), its rows read with pread."""

  def __init__(self, path: str, name: str | None):
    self.path, self.name = path, name
    offset = 0
    if name is not None:  # a member of the zip archive: where its bytes start
      with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
          raise ValueError(f"{path}: array {name!r} is compressed (np.savez_compressed); a "
                           "streamed set must be stored uncompressed: save it with np.savez")
      with open(path, "rb") as f:  # the local header's own name and extra field lengths
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), "<u2")
        offset = info.header_offset + 30 + int(name_len) + int(extra_len)
    with open(path, "rb") as f:
      f.seek(offset)
      version = np.lib.format.read_magic(f)
      read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                     else np.lib.format.read_array_header_2_0)
      shape, fortran, dtype = read_header(f)
      self.data_offset = f.tell()
    if fortran:
      raise ValueError(f"{path}: array {name!r} is stored in Fortran order; save a C-ordered copy")
    self.shape, self.dtype = tuple(shape), np.dtype(dtype)
    self.row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize

  def read(self, indices: np.ndarray) -> np.ndarray:
    out = np.empty((len(indices), *self.shape[1:]), self.dtype)
    flat = out.view(np.uint8).reshape(len(indices), self.row_bytes)  # also for 0 rows
    fd = os.open(self.path, os.O_RDONLY)
    try:
      for j, i in enumerate(indices):
        if not 0 <= i < self.shape[0]:
          raise IndexError(f"row {i} of {self.shape[0]}")
        flat[j] = np.frombuffer(os.pread(fd, self.row_bytes, self.data_offset
                                         + int(i) * self.row_bytes), np.uint8)
    finally:
      os.close(fd)
    return out

  def lazy(self) -> LazyArray:
    return LazyArray(self.read, self.shape, self.dtype)


def npz_members(path: str) -> list[str]:
  with zipfile.ZipFile(path) as archive:
    return [n[:-4] for n in archive.namelist() if n.endswith(".npy")]


class TfdsColumn:
  """One feature of a prepared TensorFlow Datasets split, read by random access."""

  def __init__(self, source: Any, feature: str, shape: tuple, dtype):
    self.source, self.feature = source, feature
    self.shape, self.dtype = (len(source), *shape), np.dtype(dtype)

  def read(self, indices: np.ndarray) -> np.ndarray:
    records = self.source.__getitems__([int(i) for i in indices])
    return np.stack([np.asarray(r[self.feature], self.dtype) for r in records]) if len(
        records) else np.empty((0, *self.shape[1:]), self.dtype)

  def lazy(self) -> LazyArray:
    return LazyArray(self.read, self.shape, self.dtype)


def as_lazy(array) -> LazyArray:
  """``array`` as a LazyArray (an in-memory array read by indexing)."""
  if isinstance(array, LazyArray):
    return array
  array = np.asarray(array)
  return LazyArray(lambda idx: array[idx], array.shape, array.dtype)


def value_range(array: LazyArray, *, chunk: int = 4096) -> tuple[float, float, int]:
  """(min, max of the finite values, how many are NaN or infinite) of a lazy array, in one pass
  of ``chunk`` rows at a time."""
  low, high, bad = math.inf, -math.inf, 0
  for rows in array.chunks(chunk):
    ok = np.isfinite(rows)
    bad += int(ok.size - np.count_nonzero(ok))
    if ok.any():
      low, high = min(low, float(rows[ok].min())), max(high, float(rows[ok].max()))
  return low, high, bad
