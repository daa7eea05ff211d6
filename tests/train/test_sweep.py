"""``contrastkit sweep``: checked space files, the trial count, a seeded sampler, and a study that
survives ``kill -9`` and is shared by two real processes on one SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from contrastkit.cli import main
from contrastkit.errors import ContrastkitError
from contrastkit.train.config import PretrainConfig, SweepConfig
from contrastkit.train.space import parse_space
from contrastkit.train.sweep import option_flags, sweep

SRC = str(Path(__file__).resolve().parents[2] / "src")
SPACE = "temperature: {low: 0.05, high: 0.5, log: true}\nlr: [0.05, 0.1, 0.2]\n"
# a trial of about a second: SupCon on 128 digits, 32 per step, validation held out
TRIAL = ["--data", "digits", "--method", "supcon", "--limit", "128", "--batch-size", "32"]
TRIAL += ["--warmup-epochs", "0", "--device", "cpu", "--quiet"]


def space_file(tmp_path: Path, text: str = SPACE) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("tau: [0.1]", "key 'tau': not a pretrain option; choose from"),
        ("out: [a, b]", "key 'out': a sweep cannot vary it"),
        ("val_fraction: [0.1, 0.2]", "key 'val_fraction': a sweep cannot vary it"),
        ("lr: []", "key 'lr': the list of choices is empty"),
        ("lr: [0.1, -1]", "key 'lr': --lr (lr) must be a finite number > 0, got -1.0"),
        ("method: [supcon, moco2]", "key 'method': unknown method 'moco2'"),
        ("lr: 0.1", "key 'lr': give a list of choices ([0.05, 0.1]) or a range"),
        ("lr: {low: 0.1}", "key 'lr': a range needs low and high"),
        ("lr: {low: 0.1, high: 1, scale: 2}", "key 'lr': a range needs low and high"),
        ("lr: {low: 0.5, high: 0.1}", "key 'lr': low must be below high"),
        ("lr: {low: 0, high: 1, log: true}", "key 'lr': a log range needs low > 0, got 0"),
        ("lr: {low: 0.1, high: 1, log: true, step: 0.1}", "key 'lr': a log range has no step"),
        ("lr: {low: 0.1, high: 1, log: yes please}", "key 'lr': log must be true or false"),
        ("epochs: {low: 1.5, high: 4}", "key 'epochs': low must be an integer, got 1.5"),
        ("epochs: {low: 0, high: 4}", "key 'epochs': --epochs (epochs) must be an integer >= 1"),
        ("epochs: {low: 1, high: 4, step: 0}", "key 'epochs': step must be > 0, got 0"),
        ("method: {low: 1, high: 2}", "key 'method': a range needs a numeric option"),
        ("views: [1, 2]", "key 'views': --views (views) must be >= 2 for simclr"),
        ("[lr, temperature]", "must map at least one pretrain option"),
        ("", "must map at least one pretrain option"),
    ],
)
def test_bad_space_is_one_line_naming_the_key(text, needle) -> None:
    import yaml

    base = PretrainConfig(method="simclr", val_fraction=0.1)
    with pytest.raises(ContrastkitError) as e:
        parse_space(yaml.safe_load(text), base, source="space.yaml")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_good_space_parses_choices_and_ranges() -> None:
    import yaml

    text = SPACE + "epochs: {low: 2, high: 8, step: 2}\n"
    params = parse_space(yaml.safe_load(text), PretrainConfig(), source="s")
    assert [(p.name, p.choices, p.log, p.integer) for p in params] == [
        ("temperature", None, True, False),
        ("lr", (0.05, 0.1, 0.2), False, False),
        ("epochs", None, False, True),
    ]


def test_cli_refuses_a_bad_space_before_creating_anything(tmp_path, capsys) -> None:
    space = space_file(tmp_path, "lr: [0.1, 0]\n")
    out = tmp_path / "sweep"
    assert main(["sweep", "--space", str(space), "--out", str(out), *TRIAL]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"error: space file {space}, key 'lr': --lr (lr) must be a finite number > 0, got 0.0\n"
    )
    assert not out.exists()
    space.write_text(SPACE)
    assert main(["sweep", "--space", str(space), "--out", str(out), "--storage", "nosuch://x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --storage (storage) 'nosuch://x' cannot be opened: ")
    assert err.count("\n") == 1 and not out.exists()


def trials_of(storage: str, study: str = "sweep") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def finished(trials) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]


@pytest.mark.slow
def test_trial_count_is_the_total_and_the_sampler_is_seeded(tmp_path) -> None:
    cfg = SweepConfig(
        space=str(space_file(tmp_path)),
        trials=2,
        pretrain=PretrainConfig(
            data="digits",
            method="supcon",
            limit=128,
            batch_size=64,
            epochs=1,
            warmup_epochs=0.0,
            device="cpu",
            quiet=True,
            seed=3,
        ),
    )
    a = sweep(replace(cfg, out=str(tmp_path / "a")))
    b = sweep(replace(cfg, out=str(tmp_path / "b")))
    ta, tb = trials_of(a.storage), trials_of(b.storage)
    assert a.finished == b.finished == 2 and len(ta) == len(tb) == 2
    assert [t.params for t in ta] == [t.params for t in tb]  # same seed, same draws
    assert [t.value for t in ta] == [t.value for t in tb]  # and the same trained runs
    # --trials is the study's total: asking for 3 runs one more, the first two are kept
    c = sweep(replace(cfg, out=str(tmp_path / "a"), trials=3))
    tc = trials_of(c.storage)
    assert c.finished == 3 and len(tc) == 3
    assert [(t.params, t.value, t.datetime_complete) for t in tc[:2]] == [
        (t.params, t.value, t.datetime_complete) for t in ta
    ]
    assert (a.dir / "summary.md").read_text().count("| complete |") == 3
    best = max((t for t in tc if t.value is not None), key=lambda t: t.value)
    assert (c.best_trial, c.best_params, c.best_value) == (best.number, best.params, best.value)
    flags = " ".join(f"--{k.replace('_', '-')} {v:.4g}" for k, v in best.params.items())
    assert c.best_flags == flags
    assert (
        f"Best: trial {best.number}, knn accuracy on validation"
        in (c.dir / "summary.md").read_text()
    )
    assert (a.dir / "summary.csv").read_text().count("\n") == 4 and (a.dir / "sweep.png").is_file()
    assert sorted(p.name for p in a.dir.glob("trial-*")) == [
        "trial-0000",
        "trial-0001",
        "trial-0002",
    ]
    with pytest.raises(ContrastkitError, match="was created with another space"):
        sweep(replace(cfg, out=str(tmp_path / "a"), space=str(space_file(tmp_path, "lr: [1.0]"))))


def sweep_cmd(space: Path, out: Path, trials: int, epochs: int, heartbeat: int = 1) -> list[str]:
    args = ["sweep", "--space", space, "--out", out, "--trials", trials, "--heartbeat", heartbeat]
    return [sys.executable, "-m", "contrastkit", *map(str, args), "--epochs", str(epochs), *TRIAL]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300  # only guards against a hang
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.slow
def test_kill_9_mid_trial_then_the_same_command_continues(tmp_path) -> None:
    space, out = space_file(tmp_path), tmp_path / "s"
    cmd = sweep_cmd(space, out, trials=2, epochs=4)
    proc = subprocess.Popen(cmd, env=env(), stderr=subprocess.PIPE, text=True)
    wait_for(out / "sweep" / "trial-0001" / "checkpoints" / "last.pt", proc)  # after an epoch
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    storage = f"sqlite:///{out / 'sweep.db'}"
    before = trials_of(storage)
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]

    again = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    after = trials_of(storage)
    assert len(finished(after)) == 2
    assert (after[0].params, after[0].value, after[0].datetime_complete) == (
        before[0].params,
        before[0].value,
        before[0].datetime_complete,
    )  # the finished trial is kept
    assert after[1].state.name == "FAIL"  # the killed one, failed once its heartbeat went stale
    redo = [t for t in after if t.system_attrs.get("failed_trial") == 1]
    assert len(redo) == 1 and redo[0].params == before[1].params
    assert redo[0].state.name in ("COMPLETE", "PRUNED")


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(tmp_path) -> None:
    """A (a CLI process) and B (this process) on one SQLite file: B works while A holds a trial,
    A's trial (its heartbeat alive) is never taken from it, and the total is exact."""
    space, out = space_file(tmp_path), tmp_path / "s"
    recipe = PretrainConfig(
        data="digits",
        method="supcon",
        limit=128,
        batch_size=32,
        warmup_epochs=0.0,
        epochs=10,
        device="cpu",
        quiet=True,
    )
    b_cfg = SweepConfig(space=str(space), trials=3, out=str(out), heartbeat=2, pretrain=recipe)
    # B's lazy imports (Optuna's sampler, SQLAlchemy, Alembic) first, on a throwaway study, so
    # that B starts within milliseconds of A's first epoch, far inside A's 10-epoch trial
    sweep(replace(b_cfg, out=str(tmp_path / "warm"), trials=1, pretrain=replace(recipe, epochs=1)))
    a = subprocess.Popen(
        sweep_cmd(space, out, trials=3, epochs=10, heartbeat=2),
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(out / "sweep" / "trial-0000" / "checkpoints" / "last.pt", a)  # epoch 1 of 10
    b = sweep(b_cfg)
    assert a.wait(timeout=600) == 0, a.stderr.read()
    trials = trials_of(b.storage)
    done = finished(trials)
    assert b.finished == len(done) == 3  # exactly the total asked for
    by_number = {t.number: t for t in trials}
    assert by_number[0].state.name == "COMPLETE" and by_number[0].user_attrs["pid"] == a.pid
    assert by_number[1].user_attrs["pid"] == os.getpid()  # B took the next one meanwhile
    assert not any(t.system_attrs.get("failed_trial") is not None for t in trials)  # none stale
    assert len({t.user_attrs["run_dir"] for t in done}) == 3
    assert all(t.user_attrs.get("surplus") for t in trials if t.state.name == "FAIL")


def test_option_flags_are_typed_as_on_the_command_line() -> None:
    params = {"lr": 0.12139543755, "augment": "shift-flip", "symmetric": False, "norm": "split"}
    params |= {"sync_bn": True, "queue_size": 8192}
    assert option_flags(params) == (
        "--lr 0.1214 --augment shift-flip --no-symmetric --norm split --sync-bn --queue-size 8192"
    )
