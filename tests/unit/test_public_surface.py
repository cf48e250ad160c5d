"""What ``import gateway`` offers and what ``reelgate --help`` costs."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import gateway
from gateway import errors

#: what the README tells users to catch: InvalidRequest, and every class in gateway/errors.py
#: a vendor failure can be
CAUGHT = ("ReelgateError", "InvalidRequest", "Unsupported", "NoRouteAvailable", "BudgetExceeded", "ConfigError",
          "DeadlineExceeded", "ProviderError", "RateLimited", "Unavailable", "AuthenticationFailed",
          "InsufficientCredits", "ContentRejected", "ProviderRejected", "GenerationFailed", "ProtocolError",
          "AmbiguousSubmit")


def test_the_error_classes_and_the_version_are_exported():
    for name in CAUGHT:
        assert name in gateway.__all__ and getattr(gateway, name) is getattr(errors, name)
    assert gateway.__version__ == metadata.version("reelgate")
    from gateway.api import Gateway

    assert gateway.Gateway is Gateway and gateway.VideoRequest.__name__ == "VideoRequest"
    for name in gateway.__all__:
        assert hasattr(gateway, name), name


def test_the_version_falls_back_to_pyproject_outside_an_install(monkeypatch):
    def not_installed(_name: str) -> str:
        raise metadata.PackageNotFoundError("reelgate")

    installed = metadata.version("reelgate")
    monkeypatch.setattr(gateway.metadata, "version", not_installed)
    assert gateway._version() == installed


def test_help_loads_neither_the_server_nor_the_gateway():
    code = """
import json, sys
from gateway.cli import app
try:
    app(["--help"])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in ("fastapi", "starlette", "uvicorn", "av", "numpy", "aiohttp", "gateway.api")
                        if m in sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []
