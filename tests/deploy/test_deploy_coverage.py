"""scripts/coverage_report.py: per-service coverage, unit tests alone and all tests, held to floors in `make test`."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import coverage
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = ROOT / "services/order/src/order_service/domain.py"


def report_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("coverage_report", ROOT / "scripts" / "coverage_report.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def data_with_lines(path: Path, lines: list[int]) -> Path:
    """Coverage data in which exactly these lines of the order service's domain module ran."""
    data = coverage.CoverageData(basename=str(path))
    data.add_arcs({str(DOMAIN): {arc for line in lines for arc in ((-1, line), (line, -1))}})
    data.write()
    return path


def test_each_service_is_measured_on_its_own_source_only(tmp_path: Path) -> None:
    report = report_module()
    executable = [n for n, text in enumerate(DOMAIN.read_text().splitlines(), 1) if text.startswith(("def ", "class "))]
    unit = data_with_lines(tmp_path / "unit", executable[:3])
    every = data_with_lines(tmp_path / "all", executable)
    rows, failures = report.table(unit, every)
    by_service = {row[0]: row for row in rows[1:]}
    assert set(by_service) == {"servicekit", "order", "payment", "inventory", "orchestrator", "overall"}
    unit_order, all_order = (float(by_service["order"][i].rstrip("%")) for i in (1, 3))
    assert 0 < unit_order < all_order < 100
    assert by_service["payment"][1] == "0.0%"  # none of its files ran
    assert any(re.match(r"order: unit coverage [0-9.]+% is under its floor", f) for f in failures)


def test_check_fails_under_a_floor_or_without_data_and_passes_above(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    report = report_module()
    data = data_with_lines(tmp_path / "data", [1, 2, 3])
    args = ["--unit-data", str(data), "--all-data", str(data)]
    assert report.main([*args, "--check"]) == 1
    assert "under its floor" in capsys.readouterr().err
    assert report.main(["--unit-data", str(tmp_path / "missing"), "--all-data", str(data), "--check"]) == 1
    assert "run `make test` first" in capsys.readouterr().err
    monkeypatch.setattr(report, "FLOORS", {name: (0.0, 0.0) for name in report.SERVICES})
    assert report.main([*args, "--check"]) == 0
    assert report.main(args) == 0  # without --check the table is only printed


def test_make_test_measures_the_unit_suites_alone_then_holds_every_service_to_its_floors() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest: ", 1)[1].split("\n\n", 1)[0]
    steps = [line.strip() for line in recipe.splitlines()[1:]]
    assert steps[0].startswith('$(RUN)/pytest -m "not slow" $(UNIT) --cov ')
    assert "cp .coverage .data/coverage-unit" in steps[1]
    assert "$(addprefix --ignore=,$(UNIT))" in steps[2]
    assert "--cov-append" in steps[2]
    assert steps[3] == "$(RUN)/python scripts/coverage_report.py --check"
    assert "UNIT := libs/servicekit/tests/unit $(wildcard services/*/tests/unit)" in makefile
    report = report_module()
    for name, (unit, every) in report.FLOORS.items():
        assert every >= 80.0, name  # the brief's floor, for all tests of each service
        assert unit > 0, name
