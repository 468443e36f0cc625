"""`python -m bench doctor`: one line per check, the command that fixes each failure, exit 1 when one fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import cli, doctor, sandbox

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def ready(tmp_path, monkeypatch):
    """A digits challenge with its submissions folder, on a machine whose sandbox and `nobody` path work."""
    (tmp_path / "pyproject.toml").write_text('[tool.bench]\ndataset = "digits"\n')
    (tmp_path / "submissions").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sandbox, "unavailable", lambda: None)
    monkeypatch.setattr(doctor, "unprivileged_user", lambda: [])
    return tmp_path


def test_a_ready_machine_is_all_well(ready, capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    for said in ("ok   Python 3.", "tensorflow ", "keras ", "jax ", "bubblewrap starts a sandbox", "settings load from",
                 "dataset digits", "submissions folder submissions/: 0 entry file(s)", "seccomp refuses SysV shared memory",
                 "all is well"):
        assert said in out, said


def test_each_problem_is_a_line_and_its_command(ready, capsys, monkeypatch):
    (ready / "submissions").rmdir()
    monkeypatch.setattr(sandbox, "unavailable", lambda: "bubblewrap (bwrap) is not installed")
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FIX  bubblewrap (bwrap) is not installed\n     run: " in out and "apt-get install bubblewrap" in out
    assert "FIX  no submissions folder submissions/" in out and "run: mkdir -p submissions" in out
    assert "2 thing(s) to fix" in out


def test_a_missing_seccomp_library_is_a_line_and_its_command(ready, capsys, monkeypatch):
    from bench import containment

    def no_library(load=True):
        raise OSError("libseccomp.so.2: cannot open shared object file")

    monkeypatch.setattr(containment, "seccomp_filter", no_library)
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FIX  the seccomp filter that refuses SysV shared memory does not load (libseccomp.so.2" in out
    assert "apt-get install libseccomp2" in out and "1 thing(s) to fix" in out


def test_a_broken_config_is_reported_not_raised(ready, capsys):
    (ready / "pyproject.toml").write_text("[tool.bench]\nepochs = 5\n")
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FIX  the settings do not load" in out and "unknown [tool.bench] setting(s) ['epochs']" in out


def test_a_folder_others_cannot_search_is_named_with_its_chmod(tmp_path):
    private = tmp_path / "root_like" / "pyenv"
    private.mkdir(parents=True)

    def closed_here():  # pytest's own folders above tmp_path may be closed too: not this test's concern
        return [folder for folder in doctor.closed_folders([private]) if folder.startswith(f"{tmp_path}/")]

    (tmp_path / "root_like").chmod(0o700)
    try:
        assert closed_here() == [str(tmp_path / "root_like")]
    finally:
        (tmp_path / "root_like").chmod(0o755)
    assert closed_here() == []


def test_doctor_imports_no_tensorflow():
    probe = "import sys; from bench import cli; cli.main(['doctor']); print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "False False", done.stdout + done.stderr
