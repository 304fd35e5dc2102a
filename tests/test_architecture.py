"""The import graph of the project: no circle, and no module imports one on a higher floor.

Floors, lowest first (README, "How the code is organised"); a module may import its own
floor and the floors its row names:

========  ==========================================================  ========================
floor     modules                                                     may import
========  ==========================================================  ========================
core      errors, devices, arrays, fourier, cli, memory, gallery      core
data      spec, simulate, dataset                                     core, data
methods   methods/ (registry, methods, checkpoint, losses)            core, methods
engine    bench/metacal/ (config, moments, estimators, engine, ...)   core, engine
pipeline  pipeline, shear, metrics, schema, reference_loop            all of the above
drivers   the command lines, Dask, report, compare, bench/test_suite/ anything
          (the benchmark suite), methods/train/ (training, tuning)
========  ==========================================================  ========================

A module's floor comes from where it lives (:func:`floor_of`): its folder, or for bench/'s own
top-level files the :data:`TOP` table; a module that fits neither fails the tests.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ["core", "data", "methods", "engine", "pipeline", "drivers"]
ALLOWED = {"core": {"core"}, "data": {"core", "data"}, "methods": {"core", "methods"},
           "engine": {"core", "engine"}, "pipeline": {"core", "data", "methods", "engine", "pipeline"},
           "drivers": set(FLOORS)}
#: folders whose modules share one floor, most specific first: a module there needs no listing
FOLDERS = (("bench/metacal/__main__.py", "drivers"),      # the command line above the engine
           ("bench/metacal/", "engine"),
           ("bench/test_suite/", "drivers"),                 # the benchmark suite
           ("methods/train/", "drivers"),                    # training and tuning commands
           ("methods/", "methods"))
#: bench/'s own top-level modules, each named with its floor (bench/__init__.py, the package's lazy
#: facade, sits on top); a new one must be added here, or it fails test_every_module_has_a_floor
TOP = {"core": {"errors", "devices", "arrays", "fourier", "cli", "memory", "gallery", "registry"},
       "data": {"spec", "simulate", "dataset"},
       "pipeline": {"pipeline", "shear", "metrics", "schema", "reference_loop"},
       "drivers": {"__init__", "distributed", "report", "figures", "tables", "history", "results", "compare",
                   "doctor", "scaling", "kernel_study"}}
DATA = {f"bench.{m}" for m in TOP["data"]}


class NoFloor(AssertionError):
    pass


def modules() -> dict[str, Path]:
    out = {}
    for pkg in ("bench", "methods"):
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def floor_of(path: Path) -> str:
    """The floor of the module in file *path*, from where it lives: its folder, or for bench/'s own
    top-level files the TOP table. Raises NoFloor for a module that fits none."""
    rel = path.relative_to(ROOT).as_posix()
    for prefix, fl in FOLDERS:
        if rel == prefix or (prefix.endswith("/") and rel.startswith(prefix)):
            return fl
    if rel.count("/") == 1 and rel.startswith("bench/"):
        name = Path(rel).stem
        for fl, names in TOP.items():
            if name in names:
                return fl
    raise NoFloor(f"{rel} fits no floor: put it in a folder of one (FOLDERS) or name its floor in TOP "
                  f"(tests/test_architecture.py and the README's 'How the code is organised')")


_PATHS = modules()


def floor(mod: str) -> str:
    return floor_of(_PATHS[mod])


def imports(mod: str, path: Path, known: set) -> set:
    """Project modules *mod* imports anywhere in its file (function-level imports included)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            pkg = ".".join(base[:len(base) - node.level + 1]) if node.level else ""
            target = ".".join(x for x in (pkg, node.module or "") if x)
            for a in node.names:
                sub = f"{target}.{a.name}"
                names.append(sub if sub in known else target)
        for n in names:
            while n and n not in known:
                n = n.rpartition(".")[0]
            if n and n != mod:
                out.add(n)
    return out


def test_every_module_has_a_floor():
    missing = []
    for mod, path in modules().items():
        try:
            floor_of(path)
        except NoFloor as err:
            missing.append(str(err))
    assert not missing, "\n".join(missing)


def test_a_new_module_that_fits_no_floor_fails(tmp_path):
    """A module added beside the others, in no folder of a floor and not named in TOP, is refused
    (it once defaulted to the top floor, where anything may be imported)."""
    import pytest
    for rel in ("bench/newthing.py", "bench/newpkg/mod.py", "tools/x.py"):
        with pytest.raises(NoFloor, match="fits no floor"):
            floor_of(ROOT / rel)
    assert floor_of(ROOT / "bench" / "metacal" / "newkernel.py") == "engine"
    assert floor_of(ROOT / "methods" / "newmethod.py") == "methods"
    assert floor_of(ROOT / "methods" / "train" / "newnet.py") == "drivers"


def graph():
    mods = modules()
    known = set(mods)
    return {m: imports(m, p, known) for m, p in mods.items()}


def test_no_upward_import():
    bad = [f"{m} ({floor(m)}) imports {d} ({floor(d)})"
           for m, deps in graph().items() for d in deps if floor(d) not in ALLOWED[floor(m)]]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    g = graph()
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_files_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in modules().values()
           if (n := len(p.read_text().splitlines())) > 420}
    assert not big, big


def test_walker_sees_an_upward_import(tmp_path):
    """The test can fail: an engine module importing methods is caught."""
    mods = modules()
    fake = tmp_path / "engine.py"
    fake.write_text("def f():\n    from methods import get_method\n")
    deps = imports("bench.metacal.engine", fake, set(mods))
    assert "methods" in deps and floor("methods") not in ALLOWED[floor("bench.metacal.engine")]


def test_report_imports_no_method_or_framework():
    for name in ("bench.report", "bench.compare"):
        deps = graph()[name]
        assert not any(d.startswith("methods") or d in DATA for d in deps), (name, deps)


def test_the_wheel_holds_every_package_and_spec(tmp_path):
    """pyproject's package patterns cover every package directory of bench/ and methods/ (an
    explicit list once left bench.metacal out of a non-editable install), and its data-files
    glob ships every named dataset spec, which bench.spec finds there without a checkout."""
    import fnmatch
    import glob
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = cfg["packages"]["find"]["include"]
    packages = {".".join(p.parent.relative_to(ROOT).parts) for top in ("bench", "methods")
                for p in (ROOT / top).rglob("__init__.py")}
    assert {"bench", "bench.metacal", "methods", "methods.dwdn", "methods.resnet_jax"} <= packages
    exclude = cfg["packages"]["find"].get("exclude", [])
    missed = [p for p in packages if not any(fnmatch.fnmatch(p, pat) for pat in include)]
    assert not missed, f"packages a wheel would leave out: {missed}"
    # the benchmark suite is run from a checkout (pytest bench/), never installed: pyproject's
    # (namespace) package search would find its folder, so it is excluded by name
    suite = ROOT / "bench" / "test_suite"
    assert (suite / "conftest.py").exists() and not (suite / "__init__.py").exists()
    assert any(fnmatch.fnmatch("bench.test_suite", pat) for pat in exclude)
    assert not list((ROOT / "bench").glob("test_*.py")), "benchmark modules belong in bench/test_suite/"
    (dest, globs), = cfg["data-files"].items()
    shipped = {Path(f).stem for g in globs for f in glob.glob(str(ROOT / g))}
    assert shipped == {p.stem for p in (ROOT / "datasets").glob("*.toml")} and "default" in shipped
    assert dest == "share/deconvbench/datasets"
    # a checkout's datasets/ wins; without one (a wheel), the installed specs
    from bench.spec import DATASETS_DIR, _datasets_dir
    assert DATASETS_DIR == ROOT / "datasets"
    wheel = tmp_path / "site" / "bench"
    wheel.mkdir(parents=True)
    prefix = tmp_path / "venv"
    (prefix / dest).mkdir(parents=True)
    assert _datasets_dir(wheel, str(prefix)) == prefix / dest
    assert _datasets_dir(ROOT / "bench", str(prefix)) == ROOT / "datasets"
