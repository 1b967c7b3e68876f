"""What a user of the package index gets: the license in the repository and in the wheel,
and a README whose links work on the index's page (where relative links break)."""

import re
import shutil
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_license_is_apache_2_in_full():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text
    assert len(text.split()) > 1500  # the whole text, not a notice pointing to it
    pyproject = (ROOT / "pyproject.toml").read_text()  # no tomllib on Python 3.10
    assert re.search(r'^license = "Apache-2\.0"$', pyproject, re.M)
    assert re.search(r'^license-files = \["LICENSE"\]$', pyproject, re.M)


def test_the_wheel_carries_the_license(tmp_path, monkeypatch):
    """Builds the wheel from a copy of the sources, as `pip wheel .` does."""
    build_meta = pytest.importorskip("setuptools.build_meta")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tmp_path)
    shutil.copytree(ROOT / "adam_optax", tmp_path / "adam_optax")
    monkeypatch.chdir(tmp_path)
    wheel = tmp_path / build_meta.build_wheel(str(tmp_path / "dist"))
    with zipfile.ZipFile(tmp_path / "dist" / wheel.name) as files:
        licenses = [n for n in files.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert len(licenses) == 1
        assert files.read(licenses[0]) == (ROOT / "LICENSE").read_bytes()
        (metadata,) = [n for n in files.namelist() if n.endswith(".dist-info/METADATA")]
        assert "License-File: LICENSE" in files.read(metadata).decode()


def test_the_readme_links_only_to_absolute_addresses_and_its_own_headings():
    """A package index shows README.md alone: a link into the repository breaks there."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)", readme) + re.findall(r'src="([^"]+)"', readme)
    relative = [t for t in targets if not re.match(r"https?://|#", t)]
    assert relative == []
