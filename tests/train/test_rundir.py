import shutil
import subprocess

import pytest

from contrastkit.train.rundir import git_dirty, git_sha, provenance

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable")


def _git(repo, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def test_git_sha_and_dirty_flag_follow_the_checkout(tmp_path):
    _git(tmp_path, "init", "-q")
    assert git_sha(tmp_path) == "unknown"  # no commit yet
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    sha = git_sha(tmp_path)
    assert len(sha) == 40 and all(c in "0123456789abcdef" for c in sha)
    assert git_dirty(tmp_path) is False
    (tmp_path / "untracked.txt").write_text("ignored\n")  # untracked files do not count
    assert git_dirty(tmp_path) is False
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_dirty(tmp_path) is True


def test_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_sha(tmp_path) == "unknown" and git_dirty(tmp_path) is None


def test_provenance_records_both():
    p = provenance("cpu")
    assert {"git_sha", "git_dirty", "torch", "threads"} <= set(p)
    assert p["git_dirty"] in (True, False, None)
