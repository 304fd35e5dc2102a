"""An npz input read one slice of objects at a time, never loaded whole (``python -m bench.metacal``).

``numpy.savez`` (and ``savez_compressed``) store each array as a ``.npy`` member of a zip
archive. :class:`NpzRows` reads each member's header when it opens the file, then the rows
of a member in order through the zip stream, stored or deflated alike, so that memory is
that of one slice whatever the file's size. Nothing is unpickled: a member of object dtype is
refused, as ``numpy.load(..., allow_pickle=False)`` refuses it.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np
from numpy.lib import format as npy_format

from ..errors import BenchFileError, BenchTypeError, BenchValueError

#: members read whole when the file is opened (one number, or one row per object, small)
_WHOLE_BELOW = 1 << 20          # bytes


def _unreadable(path, err) -> BenchValueError:
    return BenchValueError(f"{path!r} is not a readable npz file ({err or type(err).__name__})")


class NpzRows:
    """The arrays of an npz file, by key, read as consecutive slices of their first axis.

    Parameters
    ----------
    path : str
        The file.

    Attributes
    ----------
    shapes, dtypes : dict
        Each member's shape and dtype, from its header.
    """

    def __init__(self, path: str):
        self.path = path
        if not os.path.exists(path):
            raise BenchFileError(f"input file not found: {path!r}")
        if os.path.isfile(path):
            with open(path, "rb") as f:
                if f.read(6) == npy_format.MAGIC_PREFIX:     # one .npy array, not an archive
                    shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
                    raise BenchValueError(
                        f"{path!r} is not an npz archive (one array of shape {shape}): save the inputs with "
                        f"numpy.savez(path, image=..., psf=..., noise_sigma=..., pixel_scale=...)")
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise _unreadable(path, err) from None
        self.shapes, self.dtypes = {}, {}
        self._streams, self._row, self._whole = {}, {}, {}
        try:
            for name in self._zip.namelist():
                if name.endswith(".npy"):
                    self._open(name[:-4], name)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            self.close()
            raise _unreadable(path, err) from None
        except BenchTypeError:
            self.close()
            raise

    def _stream(self, name: str):
        """The member *name* opened, positioned at its data; and its (shape, fortran, dtype)."""
        fp = self._zip.open(name)
        version = npy_format.read_magic(fp)
        header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        return fp, header(fp)

    def _open(self, key: str, name: str) -> None:
        fp, (shape, fortran, dtype) = self._stream(name)
        if dtype.hasobject:
            fp.close()
            raise BenchTypeError(f"{key} in {self.path!r} holds Python objects (dtype {dtype}): inputs are never "
                                 f"unpickled (allow_pickle=False); save plain numeric arrays")
        self.shapes[key], self.dtypes[key] = tuple(shape), dtype
        count = int(np.prod(shape, dtype=np.int64))
        if len(shape) == 0 or count * dtype.itemsize < _WHOLE_BELOW or (fortran and len(shape) > 1):
            # a number, a small array, or a Fortran-ordered one (its rows are not contiguous): whole
            self._whole[key] = self._read(fp, key, count, dtype).reshape(shape, order="F" if fortran else "C")
            fp.close()
        else:
            self._streams[key], self._row[key] = fp, 0

    def _read(self, fp, key: str, count: int, dtype) -> np.ndarray:
        buf = bytearray(count * dtype.itemsize)
        got = fp.readinto(buf) if buf else 0
        if got != len(buf):
            raise BenchValueError(f"{key} in {self.path!r} is truncated: {got} of {len(buf)} bytes")
        return np.frombuffer(buf, dtype=dtype)

    def __contains__(self, key) -> bool:
        return key in self.shapes

    def whole(self, key: str) -> np.ndarray:
        """A member read when the file was opened (a number or a small array)."""
        return self._whole[key]

    def rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Objects ``start:stop`` of member *key*; a streamed member is read forward (an earlier
        start reopens its stream)."""
        if key in self._whole:
            return self._whole[key][start:stop]
        shape, dtype = self.shapes[key], self.dtypes[key]
        stop = min(stop, shape[0])
        start = min(start, stop)
        per_row = int(np.prod(shape[1:], dtype=np.int64))
        if start < self._row[key]:
            self._streams[key].close()
            self._streams[key], self._row[key] = self._stream(key + ".npy")[0], 0
        fp = self._streams[key]
        try:
            while self._row[key] < start:           # skip forward a bounded piece at a time
                skip = min(start - self._row[key], max(1, _WHOLE_BELOW // max(1, per_row * dtype.itemsize)))
                self._read(fp, key, skip * per_row, dtype)
                self._row[key] += skip
            out = self._read(fp, key, (stop - start) * per_row, dtype).reshape((stop - start,) + shape[1:])
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise _unreadable(self.path, err) from None
        self._row[key] = stop
        return out

    def close(self) -> None:
        for fp in self._streams.values():
            fp.close()
        self._streams.clear()
        self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["NpzRows"]
