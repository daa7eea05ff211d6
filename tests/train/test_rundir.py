import os
import shutil
import subprocess

import pytest

from contrastkit.errors import ContrastkitError
from contrastkit.train import rundir
from contrastkit.train.rundir import git_dirty, git_sha, provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable")


@pytest.fixture
def clean_git_env(monkeypatch):
    """git as on a fresh machine: no user/system config, no repository from the environment."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_CEILING_DIRECTORIES"):
        monkeypatch.delenv(var, raising=False)


def _git(repo, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false",
         "-c", "core.hooksPath=/dev/null", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )  # fmt: skip


@needs_git
def test_git_sha_and_dirty_flag_follow_the_checkout(tmp_path, clean_git_env):
    _git(tmp_path, "init", "-q")
    assert git_sha(tmp_path) == "unknown"  # no commit yet
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    sha = git_sha(tmp_path)
    assert len(sha) == 40 and all(c in "0123456789abcdef" for c in sha)
    assert git_dirty(tmp_path) is False
    (tmp_path / "a.py").write_text("x = 1000\n")  # modified
    assert git_dirty(tmp_path) is True
    (tmp_path / "a.py").write_text("x = 1\n")
    assert git_dirty(tmp_path) is False
    (tmp_path / "new.py").write_text("y = 2\n")  # a new source file counts too
    assert git_dirty(tmp_path) is True
    (tmp_path / ".gitignore").write_text("new.py\n.gitignore\n")  # ignored files do not
    assert git_dirty(tmp_path) is False


@needs_git
def test_dirty_flag_looks_only_below_its_directory(tmp_path, clean_git_env):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("x = 1\n")
    (tmp_path / "README").write_text("docs\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "one")
    (tmp_path / "README").write_text("docs, edited\n")
    assert git_dirty(tmp_path / "pkg") is False and git_dirty(tmp_path) is True


@needs_git
def test_outside_a_checkout(tmp_path, monkeypatch, clean_git_env):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_sha(tmp_path) == "unknown" and git_dirty(tmp_path) is None


@needs_git
def test_provenance_reads_the_source_state_once_per_process(monkeypatch):
    calls = []
    monkeypatch.setattr(rundir, "git_sha", lambda: calls.append("sha") or "f" * 40)
    monkeypatch.setattr(rundir, "git_dirty", lambda: calls.append("dirty") or True)
    rundir.source_state.cache_clear()
    try:
        first, second = provenance("cpu"), provenance("cpu")
    finally:
        rundir.source_state.cache_clear()
    assert calls == ["sha", "dirty"]  # a commit during a long run does not relabel it
    assert first["git_sha"] == second["git_sha"] == "f" * 40
    assert first["git_dirty"] is True and {"torch", "threads", "device"} <= set(first)


def _run_dir(path, monitored, knn=None, **config):
    """A run directory of 3 epochs whose monitor measured at ``monitored`` {epoch: accuracy}."""
    path.mkdir()
    rundir.write_config(path, {"method": "supcon", "knn_k": 200, "knn_t": 0.1, **config}, {})
    for epoch in (1, 2, 3):
        rundir.append_metrics(path, {"kind": "step", "step": epoch})
        rundir.append_metrics(
            path, {"kind": "epoch", "epoch": epoch, "knn_acc": monitored.get(epoch)}
        )
    if knn is not None:
        knn = {"test_acc": 0.9, "k": 200, "t": 0.1, "n_train": 500, **knn}
        rundir.write_json(path / "knn.json", {k: v for k, v in knn.items() if v is not None})
    return path


def test_knn_curve_is_the_monitor_closed_by_the_final_evaluation(tmp_path):
    run = _run_dir(tmp_path / "a", {2: 0.7}, knn={})
    assert rundir.knn_curve(run) == [(2, 0.7), (3, 0.9)]
    run = _run_dir(tmp_path / "b", {2: 0.7, 3: 0.8}, knn={})  # monitored at the end: kept as is
    assert rundir.knn_curve(run) == [(2, 0.7), (3, 0.8)]
    assert rundir.knn_curve(_run_dir(tmp_path / "c", {1: 0.6})) == [(1, 0.6)]  # not evaluated
    run = _run_dir(tmp_path / "d", {}, knn={}, limit=500)
    assert rundir.knn_curve(run) == [(3, 0.9)]


@pytest.mark.parametrize(
    ("knn", "config"),
    [({"k": 20}, {}), ({"t": 0.07}, {}), ({}, {"limit": 100}), ({"n_train": None}, {"limit": 500})],
    ids=["other k", "other t", "monitor bank was a subset", "bank size unknown"],
)
def test_knn_curve_leaves_out_a_final_evaluation_that_measured_something_else(
    tmp_path, knn, config
):
    run = _run_dir(tmp_path / "r", {2: 0.7}, knn=knn, **config)
    assert rundir.knn_curve(run) == [(2, 0.7)]


def test_resume_keeps_a_dataset_object_run_and_a_registry_run_apart(tmp_path):
    obj, named = tmp_path / "obj", tmp_path / "named"
    for path, data in ((obj, rundir.CUSTOM_DATA), (named, "digits")):
        path.mkdir()
        rundir.write_config(path, {"data": data, "method": "ce", "epochs": 2}, {"seed": 0})
    with pytest.raises(ContrastkitError, match="run on a Dataset object: pass it again as data="):
        rundir.resumed_options({"out": str(obj)}, "pretrain")
    with pytest.raises(ContrastkitError, match="run on a Dataset object: pass it again"):
        rundir.resumed_options({"out": str(obj), "data": "digits"}, "pretrain")
    with pytest.raises(ContrastkitError, match="run on the data set 'digits', not on a Dataset"):
        rundir.resumed_options({"out": str(named), "data": rundir.CUSTOM_DATA}, "pretrain", True)
    given = {"out": str(obj), "data": rundir.CUSTOM_DATA, "epochs": 2, "quiet": True}
    resumed = rundir.resumed_options(given, "pretrain", data_object=True)
    assert resumed == {**given, "method": "ce", "resume": True}
    assert rundir.resumed_options({"out": str(named)}, "pretrain")["data"] == "digits"
