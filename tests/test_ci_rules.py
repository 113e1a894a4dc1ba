"""The test suite's own rules (tests/conftest.py), checked on a copy of them."""
import os
import shutil
import subprocess
import sys


def test_ci_fails_on_a_skip_it_did_not_expect(tmp_path):
    """Under CI=true a skip fails the run; elsewhere it is a skip."""
    shutil.copy(os.path.join(os.path.dirname(__file__), "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_skips.py").write_text("import pytest\n\ndef test_a():\n    pytest.skip('a tool is missing')\n")

    def run(ci: bool):
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        if ci:
            env["CI"] = "true"
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)

    assert run(ci=False).returncode == 0
    r = run(ci=True)
    assert r.returncode == 1 and "unexpected skip" in r.stdout and "a tool is missing" in r.stdout, r.stdout
