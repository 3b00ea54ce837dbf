"""The installed package holds every subpackage and its data (`pip install .`, not only -e)."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the `tomli` package (in the test extra)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_for_setuptools():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "metropolis_env").rglob("__init__.py")}
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert config["package-dir"]["metropolis_env.wrappers"] == "wrappers"


def test_the_ville_data_and_its_notice_ship_with_the_package():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["metropolis_env"]
    shipped = {p for pattern in patterns for p in (ROOT / "metropolis_env").glob(pattern)}
    data = ROOT / "metropolis_env" / "data" / "the_ville"
    assert {data / "NOTICE", data / "map.json", data / "runs" / "skip-morning-s-14" / "positions.csv.gz"} <= shipped
