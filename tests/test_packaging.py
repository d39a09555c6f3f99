"""The install is quiet and complete: every importable folder of the source tree is a listed package, and the
metadata uses the current forms (setuptools warns at install time about anything else)."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def importable_folders(package: str, folder: Path) -> set[str]:
    """Dotted names of `folder` and every sub-folder Python could import (identifier names, not caches)."""
    names = {package}
    for sub in folder.iterdir():
        if sub.is_dir() and sub.name.isidentifier() and sub.name != "__pycache__":
            names |= importable_folders(f"{package}.{sub.name}", sub)
    return names


def test_every_importable_folder_is_a_listed_package():
    listed = set(SETUPTOOLS["packages"])
    for package, folder in SETUPTOOLS["package-dir"].items():
        missing = importable_folders(package, ROOT / folder) - listed
        assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages (or rename the folder)"


def test_package_data_belongs_to_listed_packages():
    for package, patterns in SETUPTOOLS["package-data"].items():
        assert package in SETUPTOOLS["packages"]
        assert not any("/" in p for p in patterns), "ship data from the package that holds it, not a sub-folder"


def test_license_is_an_spdx_expression():
    assert isinstance(PYPROJECT["project"]["license"], str)
