"""Adapters pointed at the sandbox's emulators instead of the vendors (``--sandbox``).

This is the client side of the sandbox: it needs only the sandbox's URL, never the
emulators themselves (``gateway.emulation``), so a gateway can use a sandbox served by
another process without loading the emulator toolkit.
"""

from __future__ import annotations

from gateway.config import Settings
from gateway.provider import ProviderSettings, Secret

#: the API key the sandbox's adapters send; emulators accept any well-formed key
SANDBOX_KEY = "sandbox-key-not-secret"


def sandbox_settings(name: str, sandbox_url: str, settings: Settings) -> ProviderSettings:
    """An adapter pointed at its emulator in the sandbox (never at a paid vendor)."""
    return ProviderSettings(name=name, api_key=Secret(SANDBOX_KEY), credential_ref="sandbox",
                            base_url=f"{sandbox_url.rstrip('/')}/{name}",
                            options=dict(settings.provider(name).options), sandbox=True)
