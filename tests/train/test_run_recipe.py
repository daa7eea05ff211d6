"""``contrastkit run`` passes recipe knobs to every method, reports CE's own head, closes the
kNN curve with its final evaluation, and refuses a test set it would not use throughout."""

import importlib
import json

import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

from contrastkit.cli import main
from contrastkit.errors import ContrastkitError
from contrastkit.train.config import PretrainConfig, RunConfig, from_dict
from contrastkit.train.evaluate import knn
from contrastkit.train.metrics import knn_curve, read_metrics
from contrastkit.train.pretrain import pretrain
from contrastkit.train.resume import resume, resume_with
from contrastkit.train.run import run

TINY = ["--limit", "64", "--batch-size", "32", "--epochs", "1", "--quiet", "--device", "cpu"]


def test_run_passes_recipe_knobs_and_reports_ce_head(tmp_path, capsys):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(
        "data: digits\nmethod: supcon,ce\nwarmup_epochs: 0.5\ntemperature: 0.2\n"
        "weight_decay: 0.001\naugment: none\nknn_every: 0\nprobe_epochs: 2\nknn_k: 10\n"
    )
    out = tmp_path / "r"
    assert main(["run", "--config", str(cfg), "--out", str(out), *TINY]) == 0
    table = capsys.readouterr().out
    assert "own head acc %" in table
    root = yaml.safe_load((out / "config.yaml").read_text())
    assert root["provenance"]["command"] == "run" and "resume" not in root
    assert root["method"] == "supcon,ce" and root["probe_epochs"] == 2 and root["epochs"] == 1
    for m in ("supcon", "ce"):
        saved = yaml.safe_load((out / m / "config.yaml").read_text())
        assert saved["warmup_epochs"] == 0.5 and saved["temperature"] == 0.2
        assert saved["weight_decay"] == 0.001 and saved["augment"] == "none"
        assert saved["knn_every"] == 0 and saved["channels_last"] is True
        assert saved["method"] == m and saved["provenance"]["command"] == "pretrain"
        assert "resume" not in saved and not any(k.startswith("probe_") for k in saved)
        epochs = [r for r in read_metrics(out / m) if r["kind"] == "epoch"]
        assert epochs[-1]["knn_acc"] is not None  # --limit: the monitor's bank is the subset
    ce = json.loads((out / "ce" / "probe.json").read_text())
    assert 0.0 <= ce["head_test_acc"] <= 1.0
    assert "head_test_acc" not in json.loads((out / "supcon" / "probe.json").read_text())
    row = json.loads((out / "results.json").read_text())["rows"]
    assert [r["head_acc"] is None for r in row] == [False, True] or [
        r["head_acc"] is None for r in row
    ] == [True, False]


def test_run_closes_the_knn_curve_with_its_final_evaluation(tmp_path):
    """Without --limit, run skips the monitor after the last epoch: knn.json measures the same."""
    out = tmp_path / "r"
    opts = {"epochs": 2, "batch_size": 256, "knn_every": 1, "probe_epochs": 2, "quiet": True}
    run(from_dict(RunConfig, {"data": "digits", "method": "supcon", "out": str(out), **opts}))
    epochs = [m for m in read_metrics(out / "supcon") if m["kind"] == "epoch"]
    assert [m["knn_acc"] is None for m in epochs] == [False, True]
    final = json.loads((out / "supcon" / "knn.json").read_text())["test_acc"]
    assert knn_curve(out / "supcon") == [(1, epochs[0]["knn_acc"]), (2, final)]
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert row["knn_acc"] == final


def test_the_final_knn_evaluation_equals_the_monitor_after_the_last_epoch(tmp_path):
    """What lets ``run`` skip that monitor: knn.json of the same weights gives the same value."""
    out = tmp_path / "p"
    r = pretrain(
        PretrainConfig(data="digits", method="ce", out=str(out), epochs=1, quiet=True, device="cpu")
    )
    assert knn(out)["test_acc"] == r.knn_acc  # float32: the same features, the same vote


def test_resume_after_limit_still_monitors_the_last_epoch(tmp_path, monkeypatch):
    """A resumed run takes --limit from the run's saved config, not from the command."""
    loop_module = importlib.import_module("contrastkit.train.loop")
    real_step, calls = loop_module.train_step, [0]

    def interrupted(*args, **kw):
        calls[0] += 1
        if calls[0] > 2:  # 64 images, batch 32: the first step of epoch 2
            raise KeyboardInterrupt
        return real_step(*args, **kw)

    out = tmp_path / "r"
    opts = {"method": "ce", "batch_size": 32, "probe_epochs": 1, "quiet": True, "device": "cpu"}
    monkeypatch.setattr(loop_module, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(
            from_dict(
                RunConfig, {"data": "digits", "out": str(out), "limit": 64, "epochs": 2, **opts}
            )
        )
    monkeypatch.setattr(loop_module, "train_step", real_step)
    resume_with(out, {"data": "digits", **opts}, command="run")  # --limit, --epochs not repeated
    epochs = [m for m in read_metrics(out / "ce") if m["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2] and epochs[-1]["knn_acc"] is not None


def test_run_refuses_test_data_beside_a_registry_name(tmp_path):
    # the raw-pixel baselines used test_data while the methods used the registry's test split
    images, labels = torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    recipe = PretrainConfig(data="digits", out=str(tmp_path / "r"))
    with pytest.raises(ContrastkitError, match=r"test_data= is for a Dataset.*'digits'"):
        run(RunConfig(pretrain=recipe), test_data=TensorDataset(images, labels))
    with pytest.raises(ContrastkitError, match=r"^data= is for a Dataset object, got 'digits'"):
        run(RunConfig(pretrain=recipe), data="digits")  # type: ignore[arg-type]
    assert not (tmp_path / "r").exists()


def test_resume_takes_every_option_from_the_saved_run_even_after_a_move(tmp_path, monkeypatch):
    """``contrastkit run --out DIR --resume`` alone continues the comparison as configured."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in [("train", 16), ("test", 4)]:
        for cls in ("a", "b"):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (8, 8), dtype=torch.uint8, generator=g).numpy()
                Image.fromarray(pixels, "L").save(tmp_path / "imgs" / split / cls / f"{i}.png")
    data = f"folder:{tmp_path / 'imgs'}"  # not the default data set: resume must read it back

    loop_module = importlib.import_module("contrastkit.train.loop")
    pretrain_module = importlib.import_module("contrastkit.train.pretrain")
    real_step, real_train, steps, calls = (
        loop_module.train_step,
        pretrain_module.train,
        [0],
        [],
    )

    def interrupted(*args, **kw):
        steps[0] += 1
        if steps[0] > 9:  # 24 images, batch 8: supcon's 2 epochs of 3 steps, ce's first epoch
            raise KeyboardInterrupt
        return real_step(*args, **kw)

    def recorded(cfg, *args, resume, **kw):
        calls.append((cfg, resume))
        return real_train(cfg, *args, resume=resume, **kw)

    first = tmp_path / "first"
    opts = {"method": "supcon,ce", "limit": 24, "batch_size": 8, "epochs": 2, "lr": 0.05}
    evaluation = {"knn_k": 5, "probe_epochs": 1, "quiet": True}
    monkeypatch.setattr(loop_module, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(from_dict(RunConfig, {"data": data, "out": str(first), **evaluation, **opts}))
    monkeypatch.setattr(loop_module, "train_step", real_step)
    assert (first / "supcon" / "probe.json").is_file() and not (first / "ce" / "knn.json").exists()
    moved = tmp_path / "moved"
    first.rename(moved)
    with pytest.raises(ContrastkitError, match=r"different options: epochs=3 \(run has 2\)"):
        resume_with(moved, {"epochs": 3}, command="run")  # `run --resume --epochs 3`
    # the two kinds of run directory, each given to the other command
    with pytest.raises(ContrastkitError, match="is a `contrastkit pretrain` run, not a"):
        resume_with(moved / "supcon", {}, command="run")
    with pytest.raises(ContrastkitError, match="is a `contrastkit run` directory, not a"):
        resume_with(moved, {}, command="pretrain")
    monkeypatch.setattr(pretrain_module, "train", recorded)
    flags = ["--resume", "--method", "supcon, ce", "--quiet", "--device", "cpu"]  # same methods
    assert main(["run", "--out", str(moved), *flags]) == 0
    assert not first.exists()  # everything went to the directory given
    # ce continued from its checkpoint of epoch 1, with its saved options and the given two
    assert [(c.method, r, c.device, c.quiet, c.out) for c, r in calls] == [
        ("ce", True, "cpu", True, str(moved / "ce"))
    ]
    epochs = [m["epoch"] for m in read_metrics(moved / "ce") if m["kind"] == "epoch"]
    assert epochs == [1, 2]
    ce = yaml.safe_load((moved / "ce" / "config.yaml").read_text())
    assert ce["data"] == data and ce["out"] == str(first / "ce")  # as written, before the move
    assert (ce["limit"], ce["batch_size"], ce["lr"], ce["knn_k"]) == (24, 8, 0.05, 5)
    assert json.loads((moved / "ce" / "probe.json").read_text())["epochs"] == 1  # probe_epochs
    rows = json.loads((moved / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["supcon", "ce"]


def test_run_on_a_dataset_object_resumes_only_with_it_and_refuses_stray_test_data(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 8, 8), dtype=torch.uint8, generator=g).float() / 255
    labels = torch.arange(24) % 2
    train, test = TensorDataset(images[:16], labels[:16]), TensorDataset(images[16:], labels[16:])
    with pytest.raises(ContrastkitError, match=r"test_data= is for a Dataset.*'digits'"):
        run(RunConfig(pretrain=PretrainConfig(out=str(tmp_path / "x"))), test_data=test)
    with pytest.raises(ContrastkitError, match=r"run with a Dataset object needs test_data="):
        run(RunConfig(pretrain=PretrainConfig(out=str(tmp_path / "x"))), data=train)
    assert not (tmp_path / "x").exists()
    out = tmp_path / "r"
    opts = {"method": "ce", "batch_size": 8, "epochs": 1, "probe_epochs": 1, "knn_k": 5}
    cfg = from_dict(RunConfig, {"out": str(out), "quiet": True, "device": "cpu", **opts})
    run(cfg, data=train, test_data=test)
    assert yaml.safe_load((out / "config.yaml").read_text())["data"] == "<dataset object>"
    with pytest.raises(ContrastkitError, match="was run on a Dataset object: pass it again"):
        resume(out)
    with pytest.raises(ContrastkitError, match=r"^data= is for a Dataset object, got 'digits'"):
        resume(out, data="digits")  # type: ignore[arg-type]
    assert resume(out, data=train, test_data=test).rows[0]["method"] == "ce"


def test_resume_may_add_methods_with_the_runs_options_but_not_drop_any(tmp_path, monkeypatch):
    """``run --out DIR --resume --methods ce,supcon`` adds supcon to a CE-only run."""
    out = tmp_path / "r"
    opts = {"limit": 64, "batch_size": 32, "epochs": 1, "lr": 0.05, "probe_epochs": 1}
    cfg = {"method": ["ce"], "out": str(out), "quiet": True, "device": "cpu", **opts}
    run(from_dict(RunConfig, cfg))  # a YAML list of methods
    before = yaml.safe_load((out / "config.yaml").read_text())
    assert before["method"] == "ce"
    with pytest.raises(ContrastkitError, match=r"without the run's method\(s\) ce: a resume may"):
        resume(out, method="supcon")
    with pytest.raises(ContrastkitError, match=r"unknown method 'byol' for --method"):
        resume(out, method="ce,byol")
    with pytest.raises(ContrastkitError, match=r"different options: lr=0.1 \(run has 0.05\)"):
        resume_with(out, {"method": "ce,supcon", "lr": 0.1}, command="run")
    recipes_module = importlib.import_module("contrastkit.train.recipes")
    pretrain_module = importlib.import_module("contrastkit.train.pretrain")
    real_defaults, real_train = recipes_module.data_defaults, pretrain_module.train
    # the data set's default kNN k changed since ce trained: supcon would differ from it
    monkeypatch.setattr(recipes_module, "data_defaults", lambda n: {**real_defaults(n), "knn_k": 7})
    with pytest.raises(ContrastkitError, match=r"its ce trained with knn_k=\d+ .* knn_k=7"):
        resume(out, method="ce,supcon")
    monkeypatch.setattr(recipes_module, "data_defaults", real_defaults)

    def failing(*args, **kw):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(pretrain_module, "train", failing)
    with pytest.raises(RuntimeError, match="interrupted"):  # the added method never finished
        resume(out, method="ce,supcon")
    assert yaml.safe_load((out / "config.yaml").read_text()) == before  # unchanged throughout

    calls: list[PretrainConfig] = []
    monkeypatch.setattr(
        pretrain_module,
        "train",
        lambda cfg, *a, **kw: calls.append(cfg) or real_train(cfg, *a, **kw),
    )
    flags = ["--resume", "--method", "supcon, ce, supcon"]  # any order; the repeat once
    assert main(["run", "--out", str(out), *flags]) == 0
    assert [c.method for c in calls] == ["supcon"]  # ce was finished
    supcon = yaml.safe_load((out / "supcon" / "config.yaml").read_text())
    assert (supcon["limit"], supcon["batch_size"], supcon["lr"]) == (64, 32, 0.05)  # the run's
    after = yaml.safe_load((out / "config.yaml").read_text())
    assert after == {**before, "method": "ce,supcon"}  # provenance as first written
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["ce", "supcon"]
