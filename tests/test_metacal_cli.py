import numpy as np
import pytest

from conftest import DATA, invoke, run_module


@pytest.fixture
def good(tmp_path, reference):
    p = tmp_path / "in.npz"
    d = {k: reference[k][:8] for k in ("image", "psf", "noise_sigma", "row", "col")}
    d["pixel_scale"] = reference["pixel_scale"]
    np.savez(p, **d)
    return p, d


def test_cli_runs(tmp_path, good):
    p, _ = good
    out = tmp_path / "out.npz"
    r = run_module("bench.metacal", p, "--out", out, "--psf", "gauss")
    assert r.returncode == 0, r.stderr
    with np.load(out) as f:
        for k in ("noshear_e1", "1p_e1", "R11", "R22", "flags", "time_s"):
            assert k in f.files
        assert f["R11"].shape == (8,)


def _write(tmp_path, d, name="bad.npz"):
    p = tmp_path / name
    np.savez(p, **d)
    return p


CASES = {
    "nan": (lambda d: d["image"].__setitem__((0, 1, 1), np.nan), "non-finite"),
    "shape": (lambda d: d.__setitem__("psf", d["psf"][:, :40, :40]), "does not match"),
    "count": (lambda d: d.__setitem__("psf", d["psf"][:5]), "objects"),
    "zero_psf": (lambda d: d["psf"].__setitem__(2, 0.0), "sums to"),
    "missing": (lambda d: d.pop("noise_sigma"), "noise_sigma"),
    "sigma": (lambda d: d.__setitem__("noise_sigma", -d["noise_sigma"]), "noise_sigma"),
    "scale": (lambda d: d.__setitem__("pixel_scale", np.float64(0.0)), "pixel_scale"),
    "ndim": (lambda d: (d.__setitem__("image", d["image"][0]), d.__setitem__("psf", d["psf"][0])), "dimensions"),
    "string": (lambda d: d.__setitem__("image", d["image"].astype(str)), "real numbers"),
    "complex": (lambda d: d.__setitem__("image", d["image"].astype(np.complex64)), "real numbers"),
    "empty": (lambda d: (d.__setitem__("image", d["image"][:0]), d.__setitem__("psf", d["psf"][:0]),
                         d.__setitem__("noise_sigma", d["noise_sigma"][:0])), "at least one"),
    "tiny": (lambda d: (d.__setitem__("image", d["image"][:, :4, :4]), d.__setitem__("psf", d["psf"][:, :4, :4])),
             "at least 8 x 8"),
    "row_outside": (lambda d: d["row"].__setitem__(3, 1000.0), "row must lie inside"),
    "scale_vector": (lambda d: d.__setitem__("pixel_scale", np.array([0.2, 0.2])), "pixel_scale"),
    "scale_huge": (lambda d: d.__setitem__("pixel_scale", np.float64(1e30)), "weight_fwhm"),
    "scale_tiny": (lambda d: d.__setitem__("pixel_scale", np.float64(1e-300)), "weight_fwhm"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2(tmp_path, good, case, capsys):
    # main in this process, as python -m runs it; the real process's exit code is checked by
    # test_not_npz_and_missing_file and test_out_may_not_be_the_input_or_in_a_missing_directory
    _, d = good
    d = {k: np.array(v, copy=True) for k, v in d.items()}
    mutate, words = CASES[case]
    mutate(d)
    p = _write(tmp_path, d)
    out = tmp_path / "out.npz"
    rc, err = invoke("bench.metacal", [p, "--out", out], capsys)
    assert rc == 2, err
    assert words in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("args,words", [
    (["--method", "fourir"], "Did you mean 'fourier'"),
    (["--psf", "gaus"], "allowed: azgauss, dilate, fitgauss, gauss"),
    (["--step", "-0.01"], "step"),
    (["--step", "1e-12"], "step must be in [1e-4, 0.2)"),
    (["--weight-fwhm", "1e-4"], "to be sampled"),
    (["--placement", "before"], "placement"),
])
def test_bad_options_exit_2(tmp_path, good, args, words, capsys):
    p, _ = good
    out = tmp_path / "out.npz"
    rc, err = invoke("bench.metacal", [p, "--out", out, *args], capsys)        # in this process, as above
    assert rc == 2 and words in err and "Traceback" not in err
    assert not out.exists()


def test_not_npz_and_missing_file(tmp_path):
    txt = tmp_path / "x.npz"
    txt.write_text("hello")
    out = tmp_path / "o.npz"
    for f, words in ((txt, "not"), (tmp_path / "none.npz", "not found")):
        r = run_module("bench.metacal", f, "--out", out)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_cuda_unavailable_is_a_clear_error(tmp_path, good):
    from bench.devices import cuda_unavailable_reason, module_missing
    if not cuda_unavailable_reason() and not module_missing("cupy"):
        pytest.skip("a GPU with CuPy is here: the CUDA path is exercised by the benchmarks")
    p, _ = good
    out = tmp_path / "out.npz"
    r = run_module("bench.metacal", p, "--out", out, "--device", "cuda")
    assert r.returncode == 2 and "--device cuda is unavailable" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_out_may_not_be_the_input_or_in_a_missing_directory(tmp_path, good):
    p, _ = good
    before = p.read_bytes()
    r = run_module("bench.metacal", p, "--out", p)
    assert r.returncode == 2 and "is the input file" in r.stderr and "Traceback" not in r.stderr
    assert p.read_bytes() == before
    r = run_module("bench.metacal", p, "--out", tmp_path / "no" / "such" / "out.npz")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "No such file" in r.stderr
    assert not list(tmp_path.glob("**/*.tmp*"))


def _h5(tmp_path, d, name="in.h5"):
    from bench.distributed import write_h5
    return write_h5(tmp_path / name, d, chunk=4)


def test_hdf5_input_is_read_in_chunks_and_matches_npz(tmp_path, reference):
    from conftest import assert_same_to_rounding

    d = {k: reference[k][:12] for k in ("image", "psf", "noise_sigma", "row", "col")}   # fields drawn by index
    d["pixel_scale"] = reference["pixel_scale"]
    np.savez(tmp_path / "in.npz", **d)
    _h5(tmp_path, d)
    outs = {}
    np.savez_compressed(tmp_path / "in-deflated.npz", **d)
    runs = (("in.npz", []), ("in.h5", ["--shard-size", "4"]), ("in.npz", ["--shard-size", "4"]),
            ("in-deflated.npz", ["--shard-size", "8"]))
    for name, extra in runs:
        out = tmp_path / f"out-{name}-{len(extra)}.npz"
        r = run_module("bench.metacal", tmp_path / name, "--out", out, "--method", "wiener-fftw", *extra)
        assert r.returncode == 0, r.stderr
        with np.load(out) as f:
            outs[(name, len(extra))] = {k: f[k] for k in f.files}
    whole = outs[("in.npz", 0)]
    for key, res in outs.items():
        for k in ("noshear_e1", "1p_e1", "2m_e2", "R11", "R22", "flags"):
            assert_same_to_rounding(res[k], whole[k], f"{key} {k}")
    assert list((tmp_path).glob("*.parts")) == []


def test_npz_errors_name_the_object_in_the_file(tmp_path, good):
    """An npz input is read a chunk at a time too: a bad value in a later chunk is named by its index."""
    _, d = good
    d = {k: np.array(v, copy=True) for k, v in d.items()}
    d["psf"][6] = 0.0                         # in the second chunk of 4
    p = tmp_path / "in.npz"
    np.savez(p, **d)
    r = run_module("bench.metacal", p, "--out", tmp_path / "out.npz", "--shard-size", "4")
    assert r.returncode == 2 and "psf of object 6 sums to 0.0" in r.stderr, r.stderr
    assert not (tmp_path / "out.npz").exists()


H5_CASES = {k: CASES[k] for k in ("nan", "zero_psf", "missing", "sigma", "scale", "shape", "count", "complex",
                                  "row_outside", "scale_huge")}


@pytest.mark.parametrize("case", sorted(H5_CASES))
def test_bad_hdf5_input_exits_2(tmp_path, good, case):
    _, d = good
    d = {k: np.array(v, copy=True) for k, v in d.items()}
    mutate, words = H5_CASES[case]
    mutate(d)
    out = tmp_path / "out.npz"
    r = run_module("bench.metacal", _h5(tmp_path, d), "--out", out, "--shard-size", "4")
    assert r.returncode == 2, r.stdout + r.stderr
    assert words in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_hdf5_errors_name_the_object_in_the_file(tmp_path, good):
    _, d = good
    d = {k: np.array(v, copy=True) for k, v in d.items()}
    d["psf"][6] = 0.0                         # in the second chunk of 4
    r = run_module("bench.metacal", _h5(tmp_path, d), "--out", tmp_path / "out.npz", "--shard-size", "4")
    assert r.returncode == 2 and "psf of object 6 sums to 0.0" in r.stderr, r.stderr
    assert not (tmp_path / "out.npz").exists()
    not_h5 = tmp_path / "fake.h5"
    not_h5.write_bytes(b"not hdf5")
    r = run_module("bench.metacal", not_h5, "--out", tmp_path / "out.npz")
    assert r.returncode == 2 and "not a readable HDF5 file" in r.stderr
