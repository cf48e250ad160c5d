"""Dependencies point one way: production code does not load the sandbox, the core
imports no vendor, and routes do not import the app that mounts them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway"
#: the command line composes the sandbox (``reelgate sandbox``, ``--sandbox``): the one
#: place outside the emulation package allowed to start emulators
ENTRY_POINTS = {"gateway/cli.py", "gateway/cli_run.py", "gateway/cli_service.py"}


def _runtime_nodes(node: ast.AST) -> list[ast.AST]:
    """``node`` and everything below it, less ``if TYPE_CHECKING:`` blocks (they load nothing)."""
    found = [node]
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            found.extend(n for c in child.orelse for n in _runtime_nodes(c))
            continue
        found.extend(_runtime_nodes(child))
    return found


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports when it runs, at its top or inside a function."""
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if ".venv" not in p.parts)


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def offenders(paths: list[Path], prefix: str) -> dict[str, list[str]]:
    found = {rel(p): sorted(m for m in imported_modules(p) if m == prefix or m.startswith(prefix + "."))
             for p in paths}
    return {path: mods for path, mods in found.items() if mods}


def test_importing_the_adapters_and_the_service_loads_no_emulator_toolkit() -> None:
    code = ("import json, sys\n"
            "import providers.fal, providers.apiframe, providers.railwail, gateway.server\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('av', 'numpy')\n"
            "                        or m.startswith('gateway.emulation'))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


#: every adapter module in the tree (a new vendor's is checked without editing this file)
ADAPTERS = sorted(f"providers.{p.parent.name}.adapter" for p in (ROOT / "providers").glob("*/adapter.py"))
#: what an adapter must not load: the emulators' toolkit and what it renders MP4s with
HEAVY = ("av", "numpy", "gateway.emulation")


def test_every_registered_provider_has_its_adapter_checked() -> None:
    registered = {ep.value.split(":")[0] for ep in metadata.entry_points(group="reelgate.providers")}
    assert registered and {f"{package}.adapter" for package in registered} <= set(ADAPTERS)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_importing_one_adapter_alone_loads_no_pyav_nor_its_emulator(adapter: str) -> None:
    # alone, in a fresh interpreter: importing every adapter at once could hide which one pulls it in
    code = ("import json, sys\n"
            f"import {adapter}\n"
            "print(json.dumps([sorted(sys.modules), sorted(m for m in sys.modules\n"
            f"    if m.split('.')[0] in {HEAVY[:2]!r} or m.startswith({HEAVY[2]!r}) or m.endswith('.emulator'))]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded, heavy = json.loads(done.stdout)
    assert adapter in loaded
    assert heavy == []


def test_no_core_module_imports_the_emulation_package() -> None:
    core = [p for p in modules_under(GATEWAY)
            if "emulation" not in p.relative_to(GATEWAY).parts and rel(p) not in ENTRY_POINTS]
    assert offenders(core, "gateway.emulation") == {}


def test_the_core_imports_no_vendor() -> None:
    assert offenders(modules_under(GATEWAY), "providers") == {}


def test_loading_every_core_module_loads_no_vendor() -> None:
    # the scan above reads import statements; this also sees a vendor reached another way
    # (importlib with a computed name, a module that imports one on load)
    code = ("import importlib, json, pkgutil, sys, gateway\n"
            "names = [m.name for m in pkgutil.walk_packages(gateway.__path__, 'gateway.')]\n"
            "for name in names:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps([len(names), sorted(m for m in sys.modules if m.split('.')[0] == 'providers')]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded, vendors = json.loads(done.stdout)
    assert loaded == len(modules_under(GATEWAY)) - 1  # every module but gateway/__init__.py, walked into
    assert vendors == []


def test_no_route_module_imports_the_app() -> None:
    routes = [p for p in modules_under(GATEWAY / "server") if p.stem.endswith("_routes")]
    assert len(routes) >= 3
    assert offenders(routes, "gateway.server.app") == {}


@pytest.mark.parametrize(("source", "loads"), [
    ("import gateway.emulation.render\n", True),
    ("def f():\n    from gateway.emulation import sandbox\n", True),
    ("from gateway.emulation.base import Emulator\n", True),
    ("if TYPE_CHECKING:\n    from gateway.emulation.base import Emulator\n", False),
    ("if TYPE_CHECKING:\n    pass\nelse:\n    import gateway.emulation\n", True),
])
def test_the_scan_sees_what_runs_at_the_top_or_in_a_function(tmp_path: Path, source: str, loads: bool) -> None:
    module = tmp_path / "m.py"
    module.write_text(source)
    assert any(m.startswith("gateway.emulation") for m in imported_modules(module)) is loads
