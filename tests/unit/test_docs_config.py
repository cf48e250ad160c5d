"""The configuration the docs tell users to copy loads as it stands: every ``yaml`` block of
README.md, docs/service.md and docs/deploy.md is a valid ``reelgate.yaml``. And the README's
general example sets no ``redis_url``: copied as it was (``redis://redis:6379/0``), a newcomer's
first ``reelgate generate --config`` warned that Redis at a host that is not there is
unreachable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gateway.config import Settings

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "service.md", ROOT / "docs" / "deploy.md"]


def yaml_blocks(path: Path) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", path.read_text(), flags=re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_every_yaml_block_of_the_docs_is_a_valid_config(path: Path) -> None:
    blocks = yaml_blocks(path)
    assert blocks, path
    for block in blocks:
        Settings.model_validate(yaml.safe_load(block))


def test_the_readme_example_sets_no_redis_and_the_reference_deployment_does() -> None:
    readme = Settings.model_validate(yaml.safe_load(yaml_blocks(ROOT / "README.md")[0]))
    assert readme.redis_url is None
    reference = Settings.model_validate(yaml.safe_load(yaml_blocks(ROOT / "docs" / "deploy.md")[0]))
    assert reference.redis_url and reference.service.store_url.startswith("postgresql://")
    assert reference.storage.path  # one directory for every replica's videos
