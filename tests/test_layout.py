"""The house's rules: rooms of at most 400 lines, no import cycle, the dependency rules between packages,
and a wheel that ships the product only (no simulator, experiments, benchmarks or tools)."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("runtime", "train", "export", "camera_demo")
TOOLS = ("simulator", "experiments", "benchmarks", "tools")
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that ``name`` imports, anywhere in it (functions too); ``from package import module`` counts
    as the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
    top = {*PRODUCT, *TOOLS}
    return {m for m in found if m.split(".")[0] in top} - {name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_every_module_is_a_room_of_at_most_400_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these along their jobs: {long}"


def test_no_import_cycle(graph):
    state, cycles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            target = next((m for m in (target, target.rpartition(".")[0]) if m in graph), None)
            if target is None or target == node:
                continue
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # a package's __init__ re-exporting its modules is not a cycle of work
    cycles = [c for c in cycles if not any(m in {n.rpartition(".")[0] for n in c} for m in c)]
    assert not cycles, cycles


def test_the_dependency_rules(graph):
    def packages_imported_by(package):
        return {target.split(".")[0] for name, targets in graph.items() if name.split(".")[0] == package
                for target in targets} - {package}

    uses = {package: packages_imported_by(package) for package in PRODUCT}
    assert not uses["runtime"] & {"train", "export", "camera_demo"}, uses["runtime"]
    assert not uses["camera_demo"] & {"train", "export"}, uses["camera_demo"]
    assert not any(b in uses[a] and a in uses[b] for a in PRODUCT for b in PRODUCT if a < b), uses
    assert not any(uses[p] & {"experiments", "benchmarks", "tools"} for p in PRODUCT), uses


def test_the_product_imports_the_simulator_only_where_it_can_do_without(graph):
    """The wheel has no simulator: what imports it says so when it is missing (or does without)."""
    users = sorted(name for name, targets in graph.items() if any(t.startswith("simulator") for t in targets))
    assert users == ["camera_demo.sources", "runtime.bench", "train.camera_crops", "train.camera_eval"]
    for name in users:
        source = modules()[name].read_text()
        assert "except ImportError" in source or "except (ImportError" in source, name


@pytest.mark.slow
def test_the_wheel_ships_the_product_only(tmp_path):
    source = tmp_path / "source"  # the tracked files only: no build/ left from an editable install
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(tmp_path), str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = tmp_path.glob("fashion_edge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == set(PRODUCT), tops
    for needed in ("runtime/images.py", "runtime/preprocess/__init__.py", "runtime/serve/service.py",
                   "runtime/serve/static/app.js", "runtime/models/edge/fashion_int8.tflite",
                   "runtime/models/edge/card.md", "camera_demo/samples.npz"):
        assert needed in names, needed
    assert not [n for n in names if "camera_sim" in n or "make_video" in n or "experiments" in n]


def test_the_scripts_that_use_the_clone_find_it():
    """benchmarks/ runs as scripts (``python benchmarks/X.py``: the folder, not the clone, is on the path); one
    that imports the simulator or experiments, which are not installed, puts the clone on the path first."""
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        tree = ast.parse(path.read_text())
        used = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        used |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        if any(name.split(".")[0] in ("simulator", "experiments") for name in used):
            assert "sys.path.insert(0, str(" in path.read_text(), f"{path.name} imports the clone's tools"
