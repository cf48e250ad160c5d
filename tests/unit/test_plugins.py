"""Plugins load through the real entry-point path; failures are reported, not swallowed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from stevedore import ExtensionManager

from gateway.plugins import discover
from gateway.provider import Provider
from tests.conftest import TOY_PLUGIN_DIR

BUILTIN = {"fal", "apiframe", "railwail"}


def test_builtin_providers_load_without_failures():
    plugins = discover()
    assert BUILTIN <= set(plugins.providers)
    assert not (BUILTIN & set(plugins.failures)), plugins.failures


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_builtin_provider_declares_what_the_core_needs(name):
    cls = discover().providers[name]
    assert issubclass(cls, Provider) and cls.name == name
    for attr in ("title", "credential_env", "default_base_url", "docs_url", "supports_idempotency",
                 "bills_failures"):
        assert getattr(cls, attr) is not None, attr
    assert cls.__module__.startswith(f"providers.{name}") or cls.__module__.startswith("providers.")


def _fake_distribution(root: Path, name: str, entry: str) -> None:
    dist = root / f"{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[reelgate.providers]\n{entry}\n")


def test_a_broken_plugin_is_reported_with_its_error(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "broken_vendor", "broken = no_such_module_xyz:Adapter")
    _fake_distribution(tmp_path, "wrong_vendor", "wrong = json:JSONDecoder")
    monkeypatch.syspath_prepend(str(tmp_path))
    # stevedore caches a namespace's entry points for the process's life; a new distribution
    # appearing mid-process is a test-only situation.
    monkeypatch.setattr(ExtensionManager, "ENTRY_POINT_CACHE", {})
    plugins = discover()
    assert "ModuleNotFoundError" in plugins.failures["broken"]
    assert "not a reelgate Provider" in plugins.failures["wrong"]
    assert BUILTIN <= set(plugins.providers)  # the others still load


@pytest.fixture
def toy_installed(tmp_path) -> Path:
    """The toy plugin as an installed distribution is seen (its metadata and entry point
    in a ``.dist-info`` on the path), with no core file touched and no pip: offline."""
    site = tmp_path / "site"
    _fake_distribution(site, "reelgate_toyvendor", "toy = reelgate_toyvendor:ToyAdapter")
    shutil.copytree(TOY_PLUGIN_DIR / "reelgate_toyvendor", site / "reelgate_toyvendor")
    return site


def _cli(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_KEY", "_API_KEY"))}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_installed_third_party_plugin_is_listed_and_routable(toy_installed, tmp_path):
    listed = _cli(toy_installed, "providers", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = [p["name"] for p in json.loads(listed.stdout)["providers"]]
    assert "toy" in names and BUILTIN <= set(names)

    made = _cli(toy_installed, "generate", "a toy boat", "--provider", "toy", "--aspect-ratio", "1:1",
                "--sandbox", "--json", "--output", "boat.mp4", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    job = json.loads(made.stdout)
    assert job["status"] == "succeeded" and job["provider"] == "toy"
    assert (tmp_path / "boat.mp4").stat().st_size > 1000
