"""bench.metacal.npz.NpzRows: an npz input read a slice of objects at a time, never unpickled."""

import zipfile

import numpy as np
import pytest

from bench.errors import BenchTypeError, BenchValueError
from bench.metacal import npz
from bench.metacal.npz import NpzRows


@pytest.fixture
def arrays():
    rng = np.random.default_rng(3)
    return {"image": rng.normal(size=(40, 2, 16, 16)).astype(np.float32), "noise_sigma": rng.uniform(1, 2, 40),
            "pixel_scale": np.array(0.2), "fortran": np.asfortranarray(rng.normal(size=(40, 3)))}


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_rows_in_order_and_out_of_order_match_the_array(tmp_path, monkeypatch, arrays, save):
    monkeypatch.setattr(npz, "_WHOLE_BELOW", 1024)          # stream every member above 1 KiB
    p = tmp_path / "in.npz"
    save(p, **arrays)
    with NpzRows(str(p)) as r:
        assert r.shapes["image"] == (40, 2, 16, 16) and r.dtypes["image"] == np.float32
        assert "image" in r._streams and "fortran" in r._whole       # streamed, and read whole
        for a, b in [(0, 12), (12, 24), (30, 40), (4, 8), (36, 99), (50, 60)]:   # forward, a skip, back, past the end
            got = r.rows("image", a, b)
            np.testing.assert_array_equal(got, arrays["image"][a:b])
            assert got.flags.writeable
        np.testing.assert_array_equal(r.rows("fortran", 5, 9), arrays["fortran"][5:9])
        np.testing.assert_array_equal(r.rows("noise_sigma", 0, 40), arrays["noise_sigma"])
        assert float(r.whole("pixel_scale")) == 0.2


def test_object_members_are_refused_not_unpickled(tmp_path, arrays):
    p = tmp_path / "in.npz"
    np.savez(p, image=arrays["image"], extra=np.array([{"a": 1}] * 3, dtype=object))
    with pytest.raises(BenchTypeError, match="allow_pickle=False"):
        NpzRows(str(p))


def test_a_truncated_member_is_named(tmp_path, monkeypatch, arrays):
    monkeypatch.setattr(npz, "_WHOLE_BELOW", 1024)
    good = tmp_path / "good.npz"
    np.savez(good, image=arrays["image"])
    member = zipfile.ZipFile(good).read("image.npy")
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w") as z:                 # a valid archive whose .npy is cut short
        z.writestr("image.npy", member[: len(member) // 2])
    with NpzRows(str(bad)) as r, pytest.raises(BenchValueError, match="image .* is truncated"):
        r.rows("image", 0, 40)


def test_one_npy_file_is_not_an_archive(tmp_path, arrays):
    p = tmp_path / "in.npy"
    np.save(p, arrays["image"])
    with pytest.raises(BenchValueError, match=r"not an npz archive \(one array of shape \(40, 2, 16, 16\)\)"):
        NpzRows(str(p))
