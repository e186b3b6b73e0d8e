"""`agents`, `schemas` and `sinks` are generic names (openai-agents installs an `agents`):
ours must be the ones imported, and no other installed distribution may provide them."""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("agents", "schemas", "sinks", "touchstream")


@pytest.mark.parametrize("name", NAMES)
def test_each_top_level_package_is_imported_from_this_repository(name: str) -> None:
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent == ROOT / name


@pytest.mark.parametrize("name", NAMES)
def test_no_other_installed_distribution_provides_the_same_import_name(name: str) -> None:
    providers = set(importlib.metadata.packages_distributions().get(name, []))
    assert providers <= {"touchstream"}, f"{name} is also provided by {providers - {'touchstream'}}"


def test_importing_touchstream_puts_the_repository_first_on_the_path() -> None:
    import sys

    import touchstream  # noqa: F401

    assert sys.path[0] == str(ROOT)
