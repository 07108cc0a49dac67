"""The redesign's shape limits hold (benchmarks/code_shape.py): no module of gencompare/ over
450 lines, no function over 60, no family name written outside its own model file."""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "code_shape.py"


def test_gencompare_stays_within_the_shape_limits():
    spec = importlib.util.spec_from_file_location("code_shape", SCRIPT)
    code_shape = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code_shape)
    assert code_shape.findings(max_module=450, max_function=60) == []
