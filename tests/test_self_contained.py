"""Self-containment and layering of the package (issue 16).

* No module reads outside the package: every file the package opens or lists while importing every
  module and running `npusim compare` (the packaged published set, with figures), a sweep and
  `npusim list` is inside npusim/ or perfmodel/, the Python installation, the run's own output
  directory, or the operating system's own files; nothing beside the checkout (../shared) is read.
  Recorded with an audit hook in a child process.
* perfmodel's modules form layers: each imports only modules below it (no import circles).
"""
import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("npusim", "perfmodel")

CHILD = textwrap.dedent("""
    import os, sys, json
    seen = []
    def hook(event, args):
        if event in ("open", "os.listdir", "os.scandir", "glob.glob") and args and isinstance(args[0], (str, bytes)):
            seen.append(os.path.abspath(os.fsdecode(args[0])))
    sys.addaudithook(hook)
    import pkgutil, importlib, npusim, perfmodel
    for pkg in (npusim, perfmodel):
        for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            try:
                importlib.import_module(m.name)
            except ModuleNotFoundError as exc:      # the torch face, where PyTorch is not installed
                if exc.name != "torch":
                    raise
    from perfmodel import cli
    rc = [cli.main(["compare", "--out", "cmp"]),
          cli.main(["sweep", "--ops", "npu_dynamic_quant", "--products", "atlas-a2", "--tokens", "1,64",
                    "--no-plots", "--quiet", "--out", "sw"]),
          cli.main(["list"])]
    sys.stdout.flush()
    sys.stderr.write("RESULT " + json.dumps({"rc": rc, "seen": sorted(set(seen))}) + "\\n")
""")


def test_no_module_reads_outside_the_package(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    result = json.loads(line[-1][len("RESULT "):])
    assert result["rc"] == [0, 0, 0]
    allowed = [ROOT / p for p in PACKAGES] + [Path(p).resolve() for p in (sys.prefix, sys.base_prefix, tmp_path)]
    system = [Path(p) for p in ("/dev", "/proc", "/sys", "/etc", "/usr", "/lib", "/lib64", "/bin")]
    outside = []
    for p in map(Path, result["seen"]):
        real = p.resolve()
        if real == ROOT or any(real.is_relative_to(a) for a in allowed):
            continue
        if any(real.is_relative_to(s) for s in system) and not real.is_relative_to(ROOT.parent):
            continue
        outside.append(str(p))
    assert not outside, f"read outside the package: {outside[:20]}"
    # and the packaged data really were what compare read
    assert any(s.endswith(os.path.join("perfmodel", "data", "published_timings.csv")) for s in result["seen"])


# -- layers ------------------------------------------------------------------------------------------

# perfmodel's modules from the bottom up; a module may import only modules listed before it. The cost builders
# (ops) need only model: the readers of measured data and the calibration may use their names and conventions.
LAYERS = ["model", "hw", "ops", "profiles", "published", "calibration", "predict", "record", "fitting", "rows", "sweep",
          "compare", "plots", "cli", "bench", "fit_report"]


def _imports(path: Path) -> set[str]:
    """perfmodel modules a file imports anywhere in it ('<package>' for the package itself)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "perfmodel":
                    found.add("<package>")
                elif a.name.startswith("perfmodel."):
                    found.add(a.name.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "perfmodel":
                found |= {a.name if a.name in LAYERS else "<package>" for a in node.names}
            elif node.module.startswith("perfmodel."):
                found.add(node.module.split(".")[1])
    return found


def test_perfmodel_modules_form_layers():
    modules = sorted(p.stem for p in (ROOT / "perfmodel").glob("*.py") if p.stem != "__init__")
    assert set(modules) == set(LAYERS), "a new module: place it in LAYERS"
    upward = set()
    for m in modules:
        for dep in _imports(ROOT / "perfmodel" / f"{m}.py") - {m}:
            if dep == "<package>" and m not in ("bench",):
                upward.add((m, "perfmodel (the package: everything)"))
            elif dep in LAYERS and LAYERS.index(dep) > LAYERS.index(m):
                upward.add((m, dep))
    assert not upward, f"imports pointing up a layer: {sorted(upward)}"
