"""Fault injection: every command meets bad values, shapes, files, state and options the same way.

Each case runs a command's ``main`` in this process through :func:`bench.cli.run_cli` (what
``python -m`` runs), so the suite is fast. A bad input must give exit code 2 (the gate: 1 for
a regression), exactly one line on stderr that names the problem (the words given per case,
usually the offending value), no traceback, and no output file. Cases are grouped by fault
class; interrupted runs, hostile plugins and the worker-kill case need real processes and
live in ``test_distributed.py``, ``test_registry.py`` and ``test_dataset.py``.
"""

from __future__ import annotations

import importlib
import json
import os

import numpy as np
import pytest

from bench.cli import run_cli
from conftest import invoke

GOOD = dict(pixel_scale=0.2)


def assert_one_line(rc, err, words, code=2):
    assert rc == code, f"exit {rc}, stderr: {err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {err}"
    assert "Traceback" not in err
    for w in ([words] if isinstance(words, str) else words):
        assert w in err, f"{w!r} not in: {err}"


# --------------------------------------------------------------------------- input stamps
def _make_stamps():
    n = 16
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    psf = np.exp(-(x ** 2 + y ** 2) / (2 * 1.5 ** 2))
    psf /= psf.sum()
    img = np.exp(-(x ** 2 / 8 + y ** 2 / 4) / 2)
    N = 8
    return {"image": np.repeat(img[None], N, 0).astype(np.float32), "psf": np.repeat(psf[None], N, 0),
            "noise_sigma": np.full(N, 1e-3), "pixel_scale": 0.2}


@pytest.fixture
def stamps():
    return _make_stamps()


def _npz(tmp_path, data, name="in.npz"):
    p = tmp_path / name
    np.savez(p, **data)
    return p


# --------------------------------------------------------------------------- class 1: bad option values
METACAL_OPTIONS = [
    (["--step", "0"], "step"), (["--step", "-0.01"], "step"), (["--step", "nan"], "nan"), (["--step", "inf"], "inf"),
    (["--step", "1e-12"], "1e-12"), (["--step", "0.6"], "0.6"), (["--step", "abc"], "abc"),
    (["--weight-fwhm", "0"], "weight_fwhm"), (["--weight-fwhm", "-1"], "-1"), (["--weight-fwhm", "nan"], "nan"),
    (["--weight-fwhm", "inf"], "inf"), (["--weight-fwhm", "1e-4"], "0.0001"), (["--weight-fwhm", "1e6"], "1000000"),
    (["--psf", "gaus"], ["gaus", "gauss"]), (["--psf", ""], "kernel"), (["--psf", "dilated"], "dilated"),
    (["--placement", "after"], "after"), (["--placement", ""], "placement"),
    (["--device", "tpu"], "tpu"), (["--device", "gpu"], "gpu"),
    (["--noise-seed", "-1"], "-1"), (["--noise-seed", "x"], "x"),
    (["--method", "wiener"], ["wiener", "wiener-fftw"]), (["--method", ""], "method"),
    (["--workers", "0"], "0"), (["--workers", "-2"], "-2"), (["--workers", "two"], "two"),
    (["--workers", "1", "--shard-size", "3"], "3"), (["--workers", "1", "--shard-size", "0"], "0"),
    (["--workers", "1", "--shard-size", "-4"], "-4"), (["--workers", "1", "--shard-size", "6"], "6"),
    (["--scheduler", "localhost:8786"], "localhost:8786"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
]


@pytest.mark.parametrize("opts,words", METACAL_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_metacal_bad_option_values(stamps, tmp_path, capsys, opts, words):
    inp, out = _npz(tmp_path, stamps), tmp_path / "out.npz"
    rc, err = invoke("bench.metacal", [inp, "--out", out, *opts], capsys)
    assert_one_line(rc, err, words)
    assert not out.exists() and not (tmp_path / "out.npz.parts").exists()


# --------------------------------------------------------------------------- class 2: bad shapes and dtypes
def _with(stamps, **changes):
    d = {k: np.array(v) for k, v in stamps.items()}
    for k, v in changes.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    return d


def _cases_shapes(s):
    N, n = s["image"].shape[0], s["image"].shape[-1]
    return [
        ("string image", dict(image=np.full((N, n, n), "a")), "image"),
        ("complex image", dict(image=s["image"] + 1j), "complex"),
        ("bool image", dict(image=s["image"] > 0), "bool"),
        ("N = 0", dict(image=s["image"][:0], psf=s["psf"][:0], noise_sigma=s["noise_sigma"][:0]), "0"),
        ("1x1 stamps", dict(image=s["image"][:, :1, :1], psf=s["psf"][:, :1, :1]), "1"),
        ("0x0 stamps", dict(image=s["image"][:, :0, :0], psf=s["psf"][:, :0, :0]), "0"),
        ("4x4 stamps", dict(image=s["image"][:, :4, :4], psf=s["psf"][:, :4, :4]), "4"),
        ("7x7 stamps", dict(image=s["image"][:, :7, :7], psf=s["psf"][:, :7, :7]), "7"),
        ("non-square", dict(image=s["image"][:, :, :12], psf=s["psf"][:, :, :12]), "12"),
        ("1-d image", dict(image=s["image"][:, 0, 0]), "image"),
        ("5-d image", dict(image=s["image"][:, None, None]), "image"),
        ("psf shape differs", dict(psf=s["psf"][:, :12, :12]), "psf"),
        ("psf count differs", dict(psf=s["psf"][:4]), "psf"),
        ("string psf", dict(psf=np.full(s["psf"].shape, "p")), "psf"),
        ("noise_sigma length", dict(noise_sigma=s["noise_sigma"][:3]), "noise_sigma"),
        ("noise_sigma negative", dict(noise_sigma=-s["noise_sigma"]), "noise_sigma"),
        ("noise_sigma nan", dict(noise_sigma=np.full(N, np.nan)), "noise_sigma"),
        ("noise_sigma string", dict(noise_sigma=np.full(N, "x")), "noise_sigma"),
        ("pixel_scale vector", dict(pixel_scale=np.array([0.2, 0.2])), "pixel_scale"),
        ("pixel_scale 1e-300", dict(pixel_scale=np.array(1e-300)), "1e-300"),
        ("pixel_scale 1e30", dict(pixel_scale=np.array(1e30)), "1e+30"),
        ("pixel_scale nan", dict(pixel_scale=np.array(np.nan)), "nan"),
        ("pixel_scale negative", dict(pixel_scale=np.array(-0.2)), "-0.2"),
        ("pixel_scale zero", dict(pixel_scale=np.array(0.0)), "pixel_scale"),
        ("pixel_scale string", dict(pixel_scale=np.array("0.2")), "pixel_scale"),
        ("row length", dict(row=np.zeros(3), col=np.zeros(N)), "row"),
        ("row 1000 px outside", dict(row=np.full(N, 1000.0), col=np.full(N, 7.5)), "1000"),
        ("col -1000 px outside", dict(row=np.full(N, 7.5), col=np.full(N, -1000.0)), "-1000"),
        ("row nan", dict(row=np.full(N, np.nan), col=np.full(N, 7.5)), "row"),
        ("noise shape", dict(noise=np.zeros((N, 12, 12))), "noise"),
        ("noise complex", dict(noise=np.zeros(s["image"].shape, complex)), "noise"),
    ]


SHAPE_CASES = _cases_shapes(_make_stamps())


@pytest.mark.parametrize("name,changes,words", SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_metacal_bad_shapes_and_dtypes(stamps, tmp_path, capsys, name, changes, words):
    inp, out = _npz(tmp_path, _with(stamps, **changes)), tmp_path / "out.npz"
    rc, err = invoke("bench.metacal", [inp, "--out", out], capsys)
    assert_one_line(rc, err, words)
    assert not out.exists()


# --------------------------------------------------------------------------- class 3: bad files
def _bad_file(kind, tmp_path, stamps):
    p = tmp_path / "in.npz"
    if kind == "missing":
        return tmp_path / "nope.npz", "nope.npz"
    if kind == "empty":
        p.write_bytes(b"")
        return p, "in.npz"
    if kind == "npy":
        q = tmp_path / "in.npy"
        np.save(q, stamps["image"])
        return q, "in.npy"
    if kind == "text":
        p.write_text("image,psf\n1,2\n")
        return p, "in.npz"
    if kind == "truncated":
        _npz(tmp_path, stamps)
        p.write_bytes(p.read_bytes()[:200])
        return p, "in.npz"
    if kind == "directory":
        d = tmp_path / "dir.npz"
        d.mkdir()
        return d, "dir.npz"
    if kind == "pickled object array":
        np.savez(p, **_with(stamps, image=np.array([object()] * 8, dtype=object)))
        return p, "allow_pickle=False"
    key = kind.split()[-1]
    return _npz(tmp_path, _with(stamps, **{key: None})), key


FILE_KINDS = ["missing", "empty", "npy", "text", "truncated", "directory", "pickled object array",
              "without image", "without psf", "without noise_sigma", "without pixel_scale"]


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_metacal_bad_input_files(stamps, tmp_path, capsys, kind):
    inp, words = _bad_file(kind, tmp_path, stamps)
    out = tmp_path / "out.npz"
    rc, err = invoke("bench.metacal", [inp, "--out", out], capsys)
    assert_one_line(rc, err, words)
    assert not out.exists()


# --------------------------------------------------------------------------- class 4: file-system faults
def _fs_case(kind, tmp_path, inp):
    if kind == "out in a missing directory":
        return tmp_path / "no" / "such" / "out.npz", "out.npz"
    if kind == "out is the input":
        return inp, "input"
    if kind == "out is a directory":
        d = tmp_path / "outdir"
        d.mkdir()
        return d, "outdir"
    if kind == "out under a file":
        f = tmp_path / "afile"
        f.write_text("x")
        return f / "out.npz", "afile"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["out in a missing directory", "out is the input", "out is a directory",
                                  "out under a file"])
def test_metacal_file_system_faults(stamps, tmp_path, capsys, kind):
    inp = _npz(tmp_path, stamps)
    before = inp.read_bytes()
    out, words = _fs_case(kind, tmp_path, inp)
    rc, err = invoke("bench.metacal", [inp, "--out", out], capsys)
    assert_one_line(rc, err, words)
    assert inp.read_bytes() == before                       # the input is never touched
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only directories")
def test_metacal_read_only_directory(stamps, tmp_path, capsys):
    inp = _npz(tmp_path, stamps)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, err = invoke("bench.metacal", [inp, "--out", ro / "out.npz"], capsys)
    finally:
        ro.chmod(0o700)
    assert_one_line(rc, err, "ro")


# --------------------------------------------------------------------------- class 5: dataset specs
SPEC_NAMES = [("../x", "../x"), ("a/b", "a/b"), ("..", ".."), ("defualt", ["defualt", "default"]), ("", "spec")]


@pytest.mark.parametrize("name,words", SPEC_NAMES)
def test_dataset_bad_spec_names(capsys, name, words):
    rc, err = invoke("bench.dataset", [name, "--no-progress"], capsys)
    assert_one_line(rc, err, words)


SPEC_VALUES = [
    ("n_quads", '"ten"', "n_quads"), ("n_quads", "-3", "-3"), ("n_quads", "0", "n_quads"),
    ("stamp_size", "0", "stamp_size"), ("stamp_size", "47", "47"), ("stamp_size", '"big"', "stamp_size"),
    ("pixel_scale", "0", "pixel_scale"), ("pixel_scale", "inf", "inf"), ("pixel_scale", "nan", "nan"),
    ("snr_bins", "[10, inf]", "inf"), ("snr_bins", "[10, nan, 20]", "nan"), ("snr_bins", "[20, 10]", "snr_bins"),
    ("bands", '["g", "q"]', "q"), ("shear", "0.9", "shear"), ("seed", "-1", "seed"),
    ("noise_pairing", '"twins"', "twins"), ("name", '"../up"', "../up"), ("colour", '"red"', "colour"),
]


@pytest.mark.parametrize("key,value,words", SPEC_VALUES, ids=lambda v: str(v))
def test_dataset_bad_spec_values(tmp_path, capsys, key, value, words):
    from bench.spec import DATASETS_DIR
    lines = (DATASETS_DIR / "smoke.toml").read_text().splitlines()
    top = [i for i, ln in enumerate(lines) if ln.startswith("[")][0]
    head = [ln for ln in lines[:top] if not ln.startswith(f"{key} ")]
    spec = tmp_path / "bad.toml"
    spec.write_text("\n".join(head + [f"{key} = {value}"] + lines[top:]) + "\n")
    rc, err = invoke("bench.dataset", [spec, "--no-progress"], capsys)
    assert_one_line(rc, err, words)
    assert not list(tmp_path.glob("*.h5*"))


def test_dataset_spec_that_is_not_toml(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text("name = \n[[[")
    rc, err = invoke("bench.dataset", [spec], capsys)
    assert_one_line(rc, err, "not valid TOML")


# --------------------------------------------------------------------------- class 6: gate and report inputs
def _run_json(**extra):
    row = {"name": "t[w]", "stats": {"median": 0.4},
           "extra_info": {"method": "wiener-fftw", "time_per_5000_s": 0.4, "peak_memory_bytes": 1,
                          "by_snr": [{"snr_bin": "all", "snr_lo": 10, "snr_hi": 200, "n": 8, "psnr_db": 31.0,
                                      "ssim": 0.8, "m": 0.001, "m_err": 0.002, "c": 0.0, "c_err": 0.001,
                                      "n_images_failed": 0}]}}
    ref = {"name": "t[r]", "stats": {"median": 0.05},
           "extra_info": {"method": "reference-workload", "time_per_5000_s": 0.05, "by_snr": []}}
    d = {"benchmarks": [ref, row], "datetime": "2026-11-25", "machine_info": {}}
    for path, v in extra.items():
        e = d["benchmarks"][1]["extra_info"]
        if path.startswith("bin_"):
            e["by_snr"][0][path[4:]] = v
        else:
            e[path] = v
    return d


BAD_JSON = [
    ("not json", "{oops", "not a benchmark JSON"), ("a list", "[1, 2]", "holds no benchmarks"),
    ("no benchmarks", '{"benchmarks": []}', "holds no benchmarks"),
    ("not ours", '{"benchmarks": [{"name": "x", "stats": {}}]}', "no deconvbench benchmarks"),
    ("time a string", json.dumps(_run_json(time_per_5000_s="fast")), "'fast'"),
    ("by_snr a string", json.dumps(_run_json(by_snr="oops")), "by_snr"),
    ("m a string", json.dumps(_run_json(bin_m="0.1")), "'0.1'"),
    ("n a list", json.dumps(_run_json(bin_n=[1])), "n must be"),
    ("binary", "\x00\x01\x02", "benchmark"),
]


@pytest.mark.parametrize("module", ["bench.report", "bench.compare"])
@pytest.mark.parametrize("name,text,words", BAD_JSON, ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None)
def test_gate_and_report_refuse_bad_json(tmp_path, capsys, module, name, text, words):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_run_json()))
    args = [bad, "--out", tmp_path / "rep"] if module == "bench.report" else [good, bad]
    rc, err = invoke(module, args, capsys)
    assert_one_line(rc, err, words)
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("opt,value", [("--time-threshold", "0"), ("--time-threshold", "-1"),
                                       ("--time-threshold", "nan"), ("--psnr-drop", "-0.5"),
                                       ("--m-sigma", "0"), ("--m-sigma", "inf"), ("--c-sigma", "-3")])
def test_gate_bad_thresholds(tmp_path, capsys, opt, value):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_run_json()))
    rc, err = invoke("bench.compare", [good, good, opt, value], capsys)
    assert_one_line(rc, err, [opt, value])


REGRESSIONS = [
    ("vanished", None, "missing from the current run"),
    ("m nan", {"bin_m": float("nan")}, "m was"), ("m_err inf", {"bin_m_err": float("inf")}, "m_err was"),
    ("time null", {"time_per_5000_s": None}, "time_per_5000_s was"),
    ("time negative", {"time_per_5000_s": -1.0}, "time_per_5000_s was"),
    ("time zero", {"time_per_5000_s": 0.0}, "time_per_5000_s was"),
    ("psnr null", {"bin_psnr_db": None}, "psnr_db was"),
    ("more failures", {"bin_n_images_failed": 3}, "non-finite output 0 -> 3"),
    ("slower", {"time_per_5000_s": 0.8}, "time per 5000 samples +100%"),
    ("psnr drop", {"bin_psnr_db": 29.0}, "PSNR 31.00 -> 29.00"),
]


@pytest.mark.parametrize("name,change,words", REGRESSIONS, ids=lambda v: v if isinstance(v, str) and len(v) < 16 else None)
def test_gate_fails_on_regressions_naming_method_and_metric(tmp_path, capsys, name, change, words):
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_run_json()))
    cur = _run_json(**(change or {}))
    if change is None:
        cur["benchmarks"] = cur["benchmarks"][:1]
    f = tmp_path / "cur.json"
    f.write_text(json.dumps(cur, allow_nan=True))
    mod = importlib.import_module("bench.compare")
    capsys.readouterr()
    rc = run_cli(mod.main, [str(base), str(f)], prog="python -m bench.compare")
    out = capsys.readouterr().out
    assert rc == 1 and "wiener-fftw" in out and words in out, out


def test_report_out_is_a_file(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_run_json()))
    f = tmp_path / "taken"
    f.write_text("mine")
    rc, err = invoke("bench.report", [good, "--out", f], capsys)
    assert_one_line(rc, err, "taken")
    assert f.read_text() == "mine"


SCALING_CSV = ("dataset,n_samples,n_bands,metacal_s,wiener-fftw_s,metacal_per_5000_s,wiener-fftw_per_5000_s,"
               "peak_rss_increase_mib\nsmoke,32,3,0.02,0.007,3.1,1.1,17\nci,400,3,0.27,0.056,3.3,0.7,169\n")
BAD_SCALING = [
    ("missing", None, "does not exist"),
    ("binary", b"\x00\xff\xfe\x00", "not a CSV file"),
    ("empty", b"", "not a CSV file"),
    ("no method", SCALING_CSV.replace("wiener-fftw_per_5000_s", "other").encode(), "found []"),
    ("no memory", SCALING_CSV.replace("peak_rss_increase_mib", "rss").encode(), "peak_rss_increase_mib"),
    ("header only", SCALING_CSV.split("\n")[0].encode() + b"\n", "has no rows"),
    ("negative", SCALING_CSV.replace(",169", ",-169").encode(), "-169"),
    ("a word", SCALING_CSV.replace("3.3,", "fast,").encode(), "'fast'"),
    ("infinite", SCALING_CSV.replace(",17", ",inf").encode(), "peak_rss_increase_mib"),
]


@pytest.mark.parametrize("name,data,words", BAD_SCALING, ids=[c[0] for c in BAD_SCALING])
def test_report_refuses_a_bad_scaling_table(tmp_path, capsys, name, data, words):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_run_json()))
    csv = tmp_path / "scaling.csv"
    if data is not None:
        csv.write_bytes(data)
    rc, err = invoke("bench.report", [good, "--scaling", csv, "--out", tmp_path / "rep"], capsys)
    assert_one_line(rc, err, ["scaling.csv", words])
    assert not (tmp_path / "rep").exists()


# --------------------------------------------------------------------------- class 7: training and tuning options
TRAIN_OPTIONS = [
    (["--epochs", "0", "0"], "epochs"), (["--epochs", "-1", "5"], "-1"), (["--epochs", "1"], "epochs"),
    (["--batch", "-1"], "-1"), (["--batch", "0"], "batch"), (["--lr", "nan", "1e-4"], "nan"),
    (["--lr", "inf", "1e-4"], "inf"), (["--lr", "0", "1e-4"], "lr takes two finite"), (["--val-fraction", "0"], "val_fraction"),
    (["--val-fraction", "0.7"], "0.7"), (["--val-fraction", "nan"], "nan"), (["--preset", "huge"], "huge"),
    (["--dataset", "default"], ["default", "--allow-benchmark-dataset"]), (["--dataset", "trian"], ["trian", "train"]),
    (["--resume"], "resume"),
]


@pytest.mark.parametrize("module", ["methods.train.dwdn", "methods.train.resnet_jax"])
@pytest.mark.parametrize("opts,words", TRAIN_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_training_bad_options(tmp_path, capsys, monkeypatch, module, opts, words):
    pytest.importorskip("torch" if "dwdn" in module else "jax")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "w.safetensors"
    rc, err = invoke(module, ["--out", out, *opts] if "--resume" not in opts else ["--out", out, *opts], capsys)
    assert_one_line(rc, err, words)
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("module", ["methods.train.dwdn", "methods.train.resnet_jax"])
def test_training_refuses_to_replace_what_exists(tmp_path, capsys, monkeypatch, module):
    pytest.importorskip("torch" if "dwdn" in module else "jax")
    pkg = importlib.import_module("methods." + module.rsplit(".", 1)[1] + ".checkpoint")   # methods.train.dwdn: methods.dwdn
    shipped = pkg.DEFAULT_CHECKPOINT
    before = shipped.read_bytes() if shipped.exists() else None
    rc, err = invoke(module, ["--out", shipped], capsys)
    assert_one_line(rc, err, "--replace-shipped")
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"user's")
    rc, err = invoke(module, ["--out", mine], capsys)
    assert_one_line(rc, err, ["mine.safetensors", "--overwrite"])
    assert mine.read_bytes() == b"user's"
    assert (shipped.read_bytes() if shipped.exists() else None) == before


TUNE_OPTIONS = [(["wiener"], ["wiener", "wiener-fftw"]), (["dwdn"], "dwdn"), (["wiener-fftw", "--n", "0"], "0"),
                (["wiener-fftw", "--n", "-5"], "-5"), (["wiener-fftw", "--dataset", "ci"], ["ci", "--allow-benchmark-dataset"]),
                (["wiener-fftw", "--dataset", "nope"], "nope")]


@pytest.mark.parametrize("args,words", TUNE_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_tuning_bad_options(capsys, args, words):
    rc, err = invoke("methods.train.tune", args, capsys)
    assert_one_line(rc, err, words)


# --------------------------------------------------------------------------- class 8: stale and untrusted state
@pytest.mark.parametrize("content", [b"", b"\x80\x04\x95garbage pickle", b"not json", b'{"wisdom": 5}',
                                     b'{"wisdom": ["(fftw-3.3.10 fftw_wisdom\\n)", 1, 2]}'],
                         ids=["empty", "pickle", "text", "wrong type", "wrong length"])
def test_fftw_wisdom_that_is_not_ours_is_ignored(tmp_path, content):
    """A wisdom file anyone could have written is never unpickled and never a traceback."""
    from methods import fft
    path = tmp_path / fft.WISDOM_FILE
    path.write_bytes(content)
    assert fft.read_wisdom(path) is None


def test_a_changed_input_is_never_answered_from_stale_shards(stamps, tmp_path, capsys):
    """A --work-dir holding another input's copy that this command did not write is refused."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "input.h5").write_bytes(b"someone else's")
    inp = _npz(tmp_path, stamps)
    rc, err = invoke("bench.metacal", [inp, "--out", tmp_path / "o.npz", "--workers", "1", "--work-dir", work], capsys)
    assert_one_line(rc, err, "did not write")
    assert (work / "input.h5").read_bytes() == b"someone else's"
