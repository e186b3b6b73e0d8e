"""The layering and purity contracts (.importlinter) hold, and fail when broken."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agents", "schemas", "sinks", "touchstream")
LINT = Path(sys.executable).with_name("lint-imports")


def lint(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--config", str(where / ".importlinter")],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(where), "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def copy_of_the_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("code")
    for p in PACKAGES:
        shutil.copytree(ROOT / p, where / p, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", where / ".importlinter")
    return where


def test_the_code_keeps_every_import_contract() -> None:
    r = lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "3 kept, 0 broken" in r.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        ("touchstream/domain/lifecycle.py", "import kafka", "do no I/O"),
        ("schemas/events.py", "import clickhouse_driver", "do no I/O"),
        ("touchstream/domain/update.py", "import sinks.rows", "agents above sinks"),
        ("sinks/rows.py", "import agents.processor", "agents above sinks"),
        ("agents/web.py", "import touchstream.cli", "entry points sit on the shell"),
        ("sinks/base.py", "import touchstream.local_servers", "entry points sit on the shell"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    copy_of_the_code: Path, module: str, bad_import: str, contract: str
) -> None:
    path = copy_of_the_code / module
    original = path.read_text()
    path.write_text(
        original.replace(
            "from __future__ import annotations\n",
            f"from __future__ import annotations\n{bad_import}\n",
            1,
        )
    )
    try:
        r = lint(copy_of_the_code)
    finally:
        path.write_text(original)
    assert r.returncode != 0
    broken = [ln for ln in r.stdout.splitlines() if "BROKEN" in ln or contract in ln]
    assert any(contract in ln for ln in broken), r.stdout[-2000:]


_CLOCK_CALLS = {
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "time_ns"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("date", "today"),
}


def test_the_domain_never_reads_the_clock() -> None:
    for path in (ROOT / "touchstream" / "domain").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
                assert (name, node.func.attr) not in _CLOCK_CALLS, (
                    f"{path.name}:{node.lineno} reads the clock: pass the time in"
                )
