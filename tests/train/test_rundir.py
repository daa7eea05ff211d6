import json
import multiprocessing
import os
import shutil
import subprocess
import time
from typing import Any

import pytest

from contrastkit.errors import ContrastkitError
from contrastkit.train import files, lock, metrics, resume, rundir
from contrastkit.train import provenance as provenance_module
from contrastkit.train.config import CUSTOM_DATA
from contrastkit.train.provenance import git_dirty, git_sha, provenance

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
    monkeypatch.setattr(provenance_module, "git_sha", lambda: calls.append("sha") or "f" * 40)
    monkeypatch.setattr(provenance_module, "git_dirty", lambda: calls.append("dirty") or True)
    provenance_module.source_state.cache_clear()
    try:
        first, second = provenance("cpu"), provenance("cpu")
    finally:
        provenance_module.source_state.cache_clear()
    assert calls == ["sha", "dirty"]  # a commit during a long run does not relabel it
    assert first["git_sha"] == second["git_sha"] == "f" * 40
    assert first["git_dirty"] is True and {"torch", "threads", "device"} <= set(first)


def _run_dir(path, monitored, knn=None, **config):
    """A run directory of 3 epochs whose monitor measured at ``monitored`` {epoch: accuracy}."""
    path.mkdir()
    options = {"method": "supcon", "knn_k": 200, "knn_t": 0.1, **config}
    rundir.write_config(path, options, {}, command="pretrain")
    for epoch in (1, 2, 3):
        metrics.append_metrics(path, {"kind": "step", "step": epoch})
        metrics.append_metrics(
            path, {"kind": "epoch", "epoch": epoch, "knn_acc": monitored.get(epoch)}
        )
    if knn is not None:
        knn = {"test_acc": 0.9, "k": 200, "t": 0.1, "n_train": 500, **knn}
        files.write_json(path / "knn.json", {k: v for k, v in knn.items() if v is not None})
    return path


def test_knn_curve_is_the_monitor_closed_by_the_final_evaluation(tmp_path):
    run = _run_dir(tmp_path / "a", {2: 0.7}, knn={})
    assert metrics.knn_curve(run) == [(2, 0.7), (3, 0.9)]
    run = _run_dir(tmp_path / "b", {2: 0.7, 3: 0.8}, knn={})  # monitored at the end: kept as is
    assert metrics.knn_curve(run) == [(2, 0.7), (3, 0.8)]
    assert metrics.knn_curve(_run_dir(tmp_path / "c", {1: 0.6})) == [(1, 0.6)]  # not evaluated
    run = _run_dir(tmp_path / "d", {}, knn={}, limit=500)
    assert metrics.knn_curve(run) == [(3, 0.9)]


@pytest.mark.parametrize(
    ("knn", "config"),
    [({"k": 20}, {}), ({"t": 0.07}, {}), ({}, {"limit": 100}), ({"n_train": None}, {"limit": 500})],
    ids=["other k", "other t", "monitor bank was a subset", "bank size unknown"],
)
def test_knn_curve_leaves_out_a_final_evaluation_that_measured_something_else(
    tmp_path, knn, config
):
    run = _run_dir(tmp_path / "r", {2: 0.7}, knn=knn, **config)
    assert metrics.knn_curve(run) == [(2, 0.7)]


def test_resume_keeps_a_dataset_object_run_and_a_registry_run_apart(tmp_path):
    obj, named = tmp_path / "obj", tmp_path / "named"
    for path, data in ((obj, CUSTOM_DATA), (named, "digits")):
        path.mkdir()
        options = {"data": data, "method": "ce", "epochs": 2}
        rundir.write_config(path, options, {"seed": 0}, command="pretrain")
    with pytest.raises(ContrastkitError, match="run on a Dataset object: pass it again as data="):
        resume.saved_options(obj, {}, data_object=False)
    with pytest.raises(ContrastkitError, match="run on a Dataset object: pass it again"):
        resume.saved_options(obj, {"data": "digits"}, data_object=False)  # --data digits
    with pytest.raises(ContrastkitError, match="run on the data set 'digits', not on a Dataset"):
        resume.saved_options(named, {"data": CUSTOM_DATA}, data_object=True)
    given = {"data": CUSTOM_DATA, "epochs": 2, "quiet": True}
    resumed = resume.saved_options(obj, given, data_object=True)
    assert resumed == {**given, "method": "ce", "out": str(obj)}
    assert resume.saved_options(named, {}, data_object=False)["data"] == "digits"


def test_a_run_directory_says_which_command_wrote_it(tmp_path):
    for command in ("pretrain", "run"):
        path = tmp_path / command
        path.mkdir()
        rundir.write_config(path, {"method": "ce"}, {"seed": 0}, command=command)
        assert rundir.read_provenance(path) == {"command": command, "seed": 0}
        assert rundir.read_config(path) == {"method": "ce"}
        assert resume.written_by(path) == command
    old = tmp_path / "old"  # written before directories recorded their command
    old.mkdir()
    (old / rundir.CONFIG).write_text("method: ce\nprovenance:\n  seed: 0\n")
    with pytest.raises(ContrastkitError, match="does not say which command wrote it"):
        resume.resume(old)
    with pytest.raises(ContrastkitError, match="holds no run"):
        resume.resume(tmp_path / "missing")


# --- metrics.jsonl: a torn last line is dropped, other damage is one error naming the line ------


def _metrics(path, data: bytes):
    path.mkdir(exist_ok=True)
    (path / rundir.METRICS).write_bytes(data)
    return path


STEP1 = b'{"kind": "step", "step": 1}\n'
STEP2 = b'{"kind": "step", "step": 2}\n'


def test_a_torn_last_line_is_left_out_and_a_resume_drops_it(tmp_path):
    run = _metrics(tmp_path / "r", STEP1 + STEP2 + b'{"kind": "epoch", "ep')
    assert metrics.read_metrics(run) == [{"kind": "step", "step": 1}, {"kind": "step", "step": 2}]
    metrics.truncate_metrics(run, 1)
    assert (run / rundir.METRICS).read_bytes() == STEP1
    # a complete JSON object without its newline is torn too: the write did not finish
    run = _metrics(tmp_path / "s", STEP1 + STEP2.rstrip(b"\n"))
    assert metrics.read_metrics(run) == [{"kind": "step", "step": 1}]
    metrics.truncate_metrics(run, 5)
    assert (run / rundir.METRICS).read_bytes() == STEP1
    assert [p.name for p in run.iterdir()] == [rundir.METRICS]  # no temporary left


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (STEP1 + b"garbage\n" + STEP2, r"line 2 is not JSON \(Expecting value at column 1\)"),
        (
            STEP1 + STEP2 + b'{"kind": "step", "x": "\xff"}\n',
            r"line 3 is not UTF-8 text \(byte 0xff",
        ),
        (b"\xff\xfe\n" + STEP1, r"line 1 is not UTF-8 text \(byte 0xff at offset 0\)"),
        (STEP1 + b"[1, 2]\n", r'line 2 is not a metrics record \(a JSON object with a "kind"\)'),
        (STEP1 + b'{"step": 3}\n' + STEP2, r"line 2 is not a metrics record"),
    ],
    ids=["not JSON", "bad UTF-8 in a line", "bad UTF-8 first", "a list", "no kind"],
)
def test_other_damage_is_one_error_naming_file_and_line(tmp_path, data, message):
    run = _metrics(tmp_path / "r", data)
    for read in (metrics.read_metrics, lambda p: metrics.truncate_metrics(p, 1)):
        with pytest.raises(ContrastkitError, match=message) as info:
            read(run)
        assert str(info.value).startswith(str(run / rundir.METRICS))
        assert "\n" not in str(info.value)
    assert (run / rundir.METRICS).read_bytes() == data  # left for the user to repair


def test_a_damaged_json_result_is_one_error_naming_the_file(tmp_path):
    (tmp_path / "knn.json").write_bytes(
        b'{"test_acc": 0.9'
    )  # a probe.json written before atomic writes
    with pytest.raises(ContrastkitError, match=r"knn.json is not JSON \(Expecting"):
        files.read_json(tmp_path / "knn.json")
    (tmp_path / "probe.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ContrastkitError, match=r"probe.json is not UTF-8 text \(byte 0xff"):
        files.read_json(tmp_path / "probe.json")


# --- writes: atomic, and an OSError says what failed on which path ------------------------------


def test_write_atomic_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "config.yaml"
    target.write_text("old\n")
    files.write_atomic(target, "new\n")
    assert target.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == [target.name]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # like open(): the umask
    missing = tmp_path / "no" / "such" / "x.json"
    with pytest.raises(FileNotFoundError, match=f"cannot write {missing}: No such file"):
        files.write_json(missing, {})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- starting over: only an unstarted run's own files, never anything else ----------------------


def _unstarted(path):
    """What a start killed between config.yaml and its first checkpoint leaves."""
    path.mkdir()
    (path / "config.yaml").write_text("method: ce\n")
    (path / "metrics.jsonl").write_text('{"kind": "step", "step": 1}\n{"kind": "st')
    (path / ".lock").write_text("")
    (path / ".config.yaml.1a2b3c4d.tmp").write_text("method")  # killed mid-write
    (path / "checkpoints").mkdir()
    (path / "checkpoints" / ".last.pt.k2j3h4.tmp").write_bytes(b"PK\x03")
    return path


def test_a_new_run_reuses_a_directory_left_before_the_first_checkpoint(tmp_path):
    run = _unstarted(tmp_path / "r")
    assert rundir.unstarted_entries(run) == []
    with rundir.open_run_dir(run, resume=False):
        assert [p.name for p in run.iterdir()] == [".lock"]  # the rest of that start is gone


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("notes.txt", r"already exists \(notes.txt\); pass --resume"),
        ("checkpoints/last.pt", r"already exists \(checkpoints\); pass --resume"),
        ("probe.json", r"already exists \(probe.json\); pass --resume"),
        ("checkpoints/keep/x", r"already exists \(checkpoints\)"),
    ],
)
def test_a_directory_with_anything_else_is_refused_and_left_alone(tmp_path, extra, message):
    run = _unstarted(tmp_path / "r")
    (run / extra).parent.mkdir(parents=True, exist_ok=True)
    (run / extra).write_text("mine")
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    with pytest.raises(ContrastkitError, match=message):
        rundir.open_run_dir(run, resume=False)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before
    assert (run / extra).read_text() == "mine"


def test_a_users_directory_is_never_taken(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"png")
    with pytest.raises(ContrastkitError, match=r"holds files that are not a run's \(a.png\)"):
        rundir.open_run_dir(tmp_path / "photos", resume=False)
    assert [p.name for p in (tmp_path / "photos").iterdir()] == ["a.png"]  # no lock file either


def test_a_run_root_reuses_unstarted_method_directories_only(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "config.yaml").write_text("method: supcon,ce\n")
    (root / "baselines.json").write_text("{}")
    _unstarted(root / "supcon")
    own = (rundir.CONFIG, rundir.LOCK, "baselines.json")
    (root / "ce").mkdir()
    (root / "ce" / "checkpoints").mkdir()
    (root / "ce" / "checkpoints" / "last.pt").write_bytes(b"weights")
    with pytest.raises(ContrastkitError, match=r"already exists \(ce\)"):
        rundir.open_run_dir(root, resume=False, own=own, sub_runs=True)
    assert (root / "ce" / "checkpoints" / "last.pt").is_file() and (root / "supcon").is_dir()
    (root / "ce" / "checkpoints" / "last.pt").unlink()
    with rundir.open_run_dir(root, resume=False, own=own, sub_runs=True):
        assert [p.name for p in root.iterdir()] == [".lock"]


def test_resume_and_reuse_of_a_path_that_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(ContrastkitError, match="exists and is not a directory"):
        rundir.open_run_dir(f, resume=False)
    with pytest.raises(ContrastkitError, match=r"cannot resume: .* is not a directory"):
        rundir.open_run_dir(f, resume=True)


def test_resume_of_a_directory_stopped_before_its_config_says_to_start_again(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / ".lock").write_text("")
    with pytest.raises(ContrastkitError, match="stopped before it began: start it again without"):
        resume.resume(run)


# --- the lock -----------------------------------------------------------------------------------


def test_a_second_lock_is_refused_at_once_naming_the_holder(tmp_path):
    with lock.RunLock(tmp_path):
        info = json.loads((tmp_path / ".lock").read_text())
        assert info["pid"] == os.getpid() and {"host", "command", "started"} <= set(info)
        with pytest.raises(ContrastkitError, match=f"is in use by pid {os.getpid()} on "):
            lock.RunLock(tmp_path)
        with pytest.raises(ContrastkitError, match="is in use by"):
            rundir.open_run_dir(tmp_path, resume=True)
    with lock.RunLock(tmp_path):  # released: free again
        pass


def _signal_then_sleep(started: Any) -> None:
    started.set()
    time.sleep(60)


def test_a_forked_child_does_not_hold_its_parents_lock(tmp_path):
    """A DataLoader worker (a fork) outliving its parent must not keep the run directory locked.

    ``flock`` locks belong to the open file, which a fork shares: before the fix the child's copy
    kept the lock after the parent released it (or died by ``kill -9``), and ``--resume`` was
    refused for as long as the worker lived.
    """
    ctx = multiprocessing.get_context("fork")
    held = lock.RunLock(tmp_path)
    started = ctx.Event()
    child = ctx.Process(target=_signal_then_sleep, args=(started,))
    child.start()
    try:
        assert started.wait(60)  # the child runs: fork and its after-fork hooks are behind it
        held.release()  # what the parent's death does to its own descriptor
        with lock.RunLock(tmp_path):  # free at once, though the child lives on
            pass
        assert child.is_alive()
    finally:
        child.kill()
        child.join()


@pytest.mark.parametrize(
    ("kind", "split", "data", "name"),
    [
        ("probe", "test", None, "probe.json"),
        ("knn", "val", None, "knn_val.json"),
        ("retrieval", "test", "fashion-mnist", "retrieval-fashion-mnist.json"),
        ("probe", "test", "folder:/data/my pets", "probe-folder__data_my_pets.json"),
    ],
)
def test_evaluation_file_names(kind, split, data, name):
    assert rundir.result_name(kind, split, data) == name


def test_a_transfer_file_needs_a_data_set_name():
    with pytest.raises(
        ContrastkitError, match="must name a data set for a transfer's file, got ' '"
    ):
        rundir.transfer_name("probe.json", " ")
