import numpy as np
import pytest

from bench import fourier
from bench.dataset import _valid_cache, cache_key, cache_path, load_dataset
from bench.errors import BenchError
from bench.simulate import simulate
from bench.spec import load_spec, validate
from conftest import run_module


def test_shapes_and_quads(smoke):
    N = smoke.spec.n_samples
    assert smoke["image"].shape == (N, 3, 48, 48)
    assert smoke["image"].dtype == np.float32
    q = smoke["quad_id"].reshape(-1, 4)
    assert (q == q[:, :1]).all()
    assert list(smoke["shear_sign"][:4]) == [1, -1, 1, -1]
    assert list(smoke["rotation"][:4]) == [0, 0, 90, 90]
    # +g and -g share the noise field
    diff = (smoke["image"] - smoke["noiseless"])[0::2] - (smoke["image"] - smoke["noiseless"])[1::2]
    assert np.abs(diff).max() < 1e-5 * np.abs(smoke["image"]).max()


def test_antithetic_noise_pairing(smoke):
    """The 90-degree pair's noise is minus the rotated noise of the 0-degree pair, offsets rotate too."""
    assert smoke.spec.noise_pairing == "antithetic"
    z = (smoke["image"].astype(np.float64) - smoke["noiseless"]) / smoke["noise_sigma"][:, :, None, None]
    z0, z90 = z[0::4], z[2::4]
    np.testing.assert_allclose(z90, -np.rot90(z0, k=-1, axes=(-2, -1)), atol=1e-3)
    c = 23.5
    np.testing.assert_allclose(smoke["col"][2::4] - c, -(smoke["row"][0::4] - c), atol=1e-12)
    np.testing.assert_allclose(smoke["row"][2::4] - c, smoke["col"][0::4] - c, atol=1e-12)
    # independent pairing draws the 90-degree field afresh (same random stream otherwise)
    indep = simulate(smoke.spec.with_overrides(noise_pairing="independent", n_quads=2), workers=1,
                     progress=False)
    zi = (indep["image"].astype(np.float64) - indep["noiseless"]) / indep["noise_sigma"][:, :, None, None]
    np.testing.assert_allclose(zi[0::4], z0[:2], atol=1e-3)
    assert np.abs(zi[2::4] + np.rot90(zi[0::4], k=-1, axes=(-2, -1))).max() > 1


def test_snr_bin_weights_share_and_interleave():
    spec = load_spec("smoke").with_overrides(n_quads=110, snr_bin_weights=[8, 1, 1, 1])
    b = spec.quad_bins()
    assert np.bincount(b).tolist() == [80, 10, 10, 10]
    assert np.bincount(b[:22], minlength=4).tolist() == [16, 2, 2, 2]      # any prefix has the mix
    equal = load_spec("smoke").with_overrides(n_quads=10)
    assert equal.quad_bins().tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    d = simulate(spec.with_overrides(n_quads=10), workers=1, progress=False)
    assert d["snr_bin"][::4].tolist() == b[:10].tolist()
    lo, hi = np.array(spec.snr_bins)[d["snr_bin"]], np.array(spec.snr_bins)[d["snr_bin"] + 1]
    assert ((d["target_snr"] >= lo) & (d["target_snr"] <= hi)).all()


def test_keys_added_later_keep_old_cache_keys():
    """noise_pairing and snr_bin_weights at their old defaults leave a spec's digest unchanged."""
    s = load_spec("train")
    assert s.noise_pairing == "independent" and s.snr_bin_weights is None
    assert s.digest() == s.with_overrides(noise_pairing="independent").digest()
    assert s.digest() != s.with_overrides(noise_pairing="antithetic").digest()
    assert s.digest() != s.with_overrides(snr_bin_weights=[2, 1, 1, 1]).digest()


def test_psf_normalised_and_centred(smoke):
    psf = smoke["psf"].astype(np.float64)
    np.testing.assert_allclose(psf.sum(axis=(2, 3)), 1.0, rtol=1e-5)
    y, x = np.mgrid[:48, :48]
    cx = (psf * x).sum(axis=(2, 3))
    cy = (psf * y).sum(axis=(2, 3))
    assert np.abs(cx - 23.5).max() < 0.05 and np.abs(cy - 23.5).max() < 0.05


def test_truth_convolved_with_psf_is_noiseless(smoke):
    t = smoke["truth"].astype(np.float64)
    p = smoke["psf"].astype(np.float64)
    conv = fourier.convolve(t, p)
    peak = np.abs(smoke["noiseless"]).max(axis=(2, 3), keepdims=True)
    assert (np.abs(conv - smoke["noiseless"]) / peak).max() < 1e-5


def test_snr_requested_vs_measured(smoke):
    nl = smoke["noiseless"].astype(np.float64)
    img = smoke["image"].astype(np.float64)
    sig = smoke["noise_sigma"][:, 0]
    norm = np.sqrt((nl ** 2).sum(axis=(1, 2, 3)))
    # matched-filter SNR measured on the noisy image, averaged over the +g members
    measured = (nl * img).sum(axis=(1, 2, 3)) / (sig * norm)
    plus = smoke["shear_sign"] == 1
    ratio = measured[plus] / smoke["target_snr"][plus]
    assert abs(ratio.mean() - 1) < 0.02
    np.testing.assert_allclose(smoke["snr"][plus], smoke["target_snr"][plus], rtol=1e-6)


def test_truth_centroid_follows_offset(smoke):
    t = smoke["truth"][:, 1].astype(np.float64)
    y, x = np.mgrid[:48, :48]
    f = t.sum(axis=(1, 2))
    cx = (t * x).sum(axis=(1, 2)) / f
    cy = (t * y).sum(axis=(1, 2)) / f
    assert np.abs(cx - smoke["col"]).max() < 0.05
    assert np.abs(cy - smoke["row"]).max() < 0.05


def test_deterministic_across_workers():
    spec = load_spec("smoke").with_overrides(n_quads=2)
    a = simulate(spec, workers=1, progress=False)
    b = simulate(spec, workers=2, progress=False, chunk_quads=1)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    c = simulate(spec.with_overrides(seed=spec.seed + 1), workers=1, progress=False)
    assert not np.array_equal(a["image"], c["image"])


def test_cache_detects_corruption_and_staleness(tmp_path):
    import h5py
    spec = load_spec("smoke").with_overrides(n_quads=1)
    ds = load_dataset(spec, cache_dir=tmp_path, progress=False, workers=1)
    path = ds.path
    assert _valid_cache(path, cache_key(spec), verify=True)
    with h5py.File(path, "r+") as f:
        f["image"][0, 0, 0, 0] += 1.0
    assert not _valid_cache(path, cache_key(spec), verify=True)
    again = load_dataset(spec, cache_dir=tmp_path, progress=False, workers=1)
    np.testing.assert_array_equal(again["image"], ds["image"])
    assert not _valid_cache(path, "another-key", verify=False)
    path.write_bytes(b"garbage")
    assert not _valid_cache(path, cache_key(spec), verify=False)
    assert cache_path(spec, tmp_path) == path


def test_cache_folder_comes_from_the_environment_unless_given(smoke, session_cache, tmp_path, monkeypatch):
    from bench.dataset import CACHE_DIR, CACHE_ENV
    assert smoke.path.parent == session_cache            # what this session's fixture set
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_path(smoke.spec).parent == tmp_path / "env"
    assert cache_path(smoke.spec, tmp_path / "arg").parent == tmp_path / "arg"
    monkeypatch.setenv(CACHE_ENV, "")
    assert cache_path(smoke.spec).parent == CACHE_DIR
    monkeypatch.delenv(CACHE_ENV)
    assert cache_path(smoke.spec).parent == CACHE_DIR


def test_zero_copy_dlpack(smoke):
    torch = pytest.importorskip("torch")
    t = smoke.as_framework("image", "torch")
    arr = smoke["image"]
    assert t.data_ptr() == arr.ctypes.data
    old = float(arr[0, 0, 0, 0])
    t[0, 0, 0, 0] = 12345.0
    assert arr[0, 0, 0, 0] == 12345.0
    arr[0, 0, 0, 0] = old
    assert isinstance(smoke.as_framework("image", "numpy"), np.ndarray)


BAD_SPECS = [
    ({"colour": 1}, "colour"),
    ({"snr_bins": [-5, 10]}, "snr_bins"),

    ({"stamp_size": 0}, "stamp_size"),
    ({"stamp_size": 47}, "stamp_size"),
    ({"bands": ["g", "q"]}, "'q'"),
    ({"psf": {"model": "airy"}}, "airy"),
    ({"snr_bin_weights": [1, 2]}, "snr_bin_weights must be a list of 4 numbers"),
    ({"snr_bin_weights": [1, 0, 1, 1]}, "snr_bin_weights must all be > 0, got [1, 0, 1, 1]"),
    ({"noise_pairing": "mirrored"}, "unknown noise_pairing 'mirrored'; allowed: independent, antithetic"),
]


@pytest.mark.parametrize("change,words", BAD_SPECS)
def test_bad_spec_errors(change, words, tmp_path):
    raw = {"name": "x", "seed": 1, "n_quads": 1, "bands": ["g", "r", "i"]}
    raw.update(change)
    with pytest.raises(BenchError, match=words.replace("[", r"\[")) as info:
        validate(raw)
    assert isinstance(info.value, (ValueError, TypeError, KeyError))
    # and from the command line: exit 2, one line, no traceback
    lines = [f'name = "x"', "seed = 1", "n_quads = 1"]
    import json
    for k, v in change.items():
        if isinstance(v, dict):
            continue
        lines.append(f"{k} = {json.dumps(v)}")
    if "bands" not in change:
        lines.append('bands = ["g", "r", "i"]')
    for k, v in change.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {json.dumps(vv)}" for kk, vv in v.items()]
    p = tmp_path / "bad.toml"
    p.write_text("\n".join(lines) + "\n")
    r = run_module("bench.dataset", p)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and words in r.stderr


def test_named_specs_validate():
    for name in ("smoke", "default", "paper"):
        s = load_spec(name)
        assert s.bands == ("g", "r", "i") and s.stamp_size == 48
        assert s.noise_pairing == "antithetic"
    assert load_spec("paper").n_samples == 100_000
    assert load_spec("default").n_samples == 11_000
    from bench.spec import available_specs
    assert {"smoke", "ci", "default", "paper", "train", "snr20-40", "bias-kolmogorov"} <= set(available_specs())
    for name in available_specs():                  # every shipped spec validates
        assert load_spec(name).name == name
    # the placement study's set: default's population, one bin at SNR 20-40, a seed of its own
    study, default = load_spec("snr20-40"), load_spec("default")
    assert study.snr_bins == (20, 40) and study.n_samples == 9000 and study.seed != default.seed
    assert (study.galaxy, study.psf, study.bands) == (default.galaxy, default.psf, default.bands)


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", ".."])
def test_spec_name_cannot_leave_the_cache_directory(name):
    from bench.errors import BenchValueError
    from bench.spec import load_spec
    with pytest.raises(BenchValueError, match="name must be letters"):
        load_spec("smoke").with_overrides(name=name)


@pytest.mark.parametrize("tamper", ["dtype", "shape", "garbage"])
def test_tampered_cache_is_rebuilt_not_trusted(tmp_path, tamper):
    """Same bytes under another dtype or shape, or a file that is not HDF5, never reach the user."""
    import h5py

    from bench.dataset import cache_path, load_dataset
    from bench.spec import load_spec

    spec = load_spec("smoke").with_overrides(n_quads=2)
    good = load_dataset(spec, cache_dir=tmp_path, progress=False, workers=1)
    path = cache_path(spec, tmp_path)
    if tamper == "garbage":
        path.write_bytes(b"not hdf5 at all")
    else:
        with h5py.File(path, "r+") as f:
            raw = f["image"][...]
            del f["image"]
            if tamper == "dtype":
                f["image"] = raw.view(np.int32)
            else:
                f["image"] = raw.reshape(raw.shape[0], raw.shape[1], -1)
    again = load_dataset(spec, cache_dir=tmp_path, progress=False, workers=1)
    np.testing.assert_array_equal(again["image"], good["image"])
    assert again["image"].dtype == np.float32


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    """A build that fails removes its partial file; orphans of dead processes (``.tmpPID`` from
    earlier versions) are removed by the next build."""
    import bench.dataset as dsmod
    from bench.dataset import cache_path, load_dataset
    from bench.spec import load_spec

    spec = load_spec("smoke").with_overrides(n_quads=2)
    path = cache_path(spec, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    orphan = path.with_suffix(".tmp999999999")          # no such process
    orphan.write_bytes(b"x" * 100)

    def failing(partial, *a, **k):
        partial.write_bytes(b"half a cache")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(dsmod, "_write_cache", failing)
    with pytest.raises(RuntimeError):
        load_dataset(spec, cache_dir=tmp_path, progress=False, workers=1)
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob("*.partial.h5")) and not path.exists()


def test_interrupted_build_resumes_with_the_same_numbers(tmp_path, monkeypatch):
    """Ctrl-C after the first task keeps the partial file; the next build simulates only the
    missing quads and gives, checksum for checksum, the cache of a build in one go."""
    import json

    import h5py

    import bench.simulate as sim
    from bench.dataset import cache_path, load_dataset
    from bench.spec import load_spec

    spec = load_spec("smoke").with_overrides(n_quads=40)           # three tasks of 16, 16 and 8 quads
    whole = load_dataset(spec, cache_dir=tmp_path / "whole", progress=False, workers=1)
    real, calls = sim._simulate_quads, []

    def interrupted_second_time(task):
        calls.append(task[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(sim, "_simulate_quads", interrupted_second_time)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(spec, cache_dir=tmp_path / "resumed", progress=False, workers=1)
    path = cache_path(spec, tmp_path / "resumed")
    partial = path.with_suffix(".partial.h5")
    assert partial.exists() and not path.exists()
    with h5py.File(partial, "r") as f:
        assert int(f.attrs["done_quads"]) == 16
    calls.clear()
    monkeypatch.setattr(sim, "_simulate_quads", lambda task: (calls.append(task[1]), real(task))[1])
    resumed = load_dataset(spec, cache_dir=tmp_path / "resumed", progress=False, workers=1)
    assert calls == [16, 32]                                        # only what was missing
    assert not partial.exists()
    with h5py.File(path, "r") as a, h5py.File(whole.path, "r") as b:
        assert json.loads(a.attrs["checksums"]) == json.loads(b.attrs["checksums"])
    for k in ("image", "truth", "quad_id", "snr"):
        np.testing.assert_array_equal(resumed[k], whole[k])


def test_a_partial_file_of_another_spec_is_not_resumed(tmp_path):
    from bench.dataset import cache_path, load_dataset
    from bench.spec import load_spec

    spec = load_spec("smoke").with_overrides(n_quads=4)
    path = cache_path(spec, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".partial.h5").write_bytes(b"not hdf5 at all")
    ds = load_dataset(spec, cache_dir=tmp_path, progress=False, workers=1)
    assert len(ds) == 16 and not path.with_suffix(".partial.h5").exists()


@pytest.mark.parametrize("edge", [float("inf"), float("nan")])
def test_snr_bin_edges_must_be_finite(edge):
    from bench.spec import load_spec
    with pytest.raises(BenchError, match="snr_bins must be positive and finite"):
        load_spec("smoke").with_overrides(snr_bins=[10, edge])


def test_streamed_dataset_reads_the_same_samples_without_loading_the_stamps(smoke):
    """stream=True leaves image, psf, truth and noiseless in the cache file; every way the harness
    indexes them gives the loaded arrays' values."""
    from bench.dataset import StreamedArray, load_dataset
    from bench.errors import BenchValueError

    s = load_dataset(smoke.spec, cache_dir=smoke.path.parent, stream=True, progress=False)
    try:
        assert s.streamed and not smoke.streamed
        for k in ("image", "psf", "truth", "noiseless"):
            assert isinstance(s[k], StreamedArray) and s[k].shape == smoke[k].shape and len(s[k]) == len(smoke)
            np.testing.assert_array_equal(s[k][4:12], smoke[k][4:12])
            np.testing.assert_array_equal(s[k][:5, 1], smoke[k][:5, 1])
            idx = np.array([9, 2, 2, 31, -1])          # any order, repeats, negative: as NumPy would
            np.testing.assert_array_equal(s[k][idx, 2], smoke[k][idx, 2])
            np.testing.assert_array_equal(np.asarray(s[k]), smoke[k])
        for k in ("quad_id", "snr_bin", "noise_sigma", "row"):
            assert isinstance(s[k], np.ndarray)         # labels and per-sample numbers are loaded
    finally:
        s.close()
    with pytest.raises(BenchValueError, match="stream must be"):
        load_dataset(smoke.spec, cache_dir=smoke.path.parent, stream="yes", progress=False)
    auto = load_dataset(smoke.spec, cache_dir=smoke.path.parent, stream="auto", progress=False)
    assert not auto.streamed                             # 32 samples: far under the 2 GiB threshold


def test_scaling_command_writes_its_table_and_figure(smoke, tmp_path):
    import pandas as pd

    from bench import scaling
    assert scaling.main(["smoke", "--out", str(tmp_path)]) == 0
    t = pd.read_csv(tmp_path / "scaling.csv")
    assert list(t["dataset"]) == ["smoke"] and int(t["n_samples"][0]) == len(smoke)
    assert t["metacal_per_5000_s"][0] > 0 and t["wiener-fftw_per_5000_s"][0] > 0
    assert (tmp_path / "scaling.png").stat().st_size > 1000
    # where and when it ran, for the report; and the table reads back through its own check
    import os
    assert int(t["n_cores"][0]) == os.cpu_count() and t["machine"][0] and len(str(t["date"][0])) == 10
    back, method = scaling.load_table(tmp_path / "scaling.csv")
    assert method == "wiener-fftw" and isinstance(back["commit"][0], str) and back["commit"][0]
