import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastkit.errors import ContrastkitError
from contrastkit.train.checkpoint import load_checkpoint
from contrastkit.train.config import (
    CUSTOM_DATA,
    PretrainConfig,
    ProbeConfig,
    RunConfig,
    from_dict,
)
from contrastkit.train.evaluate import linear_probe
from contrastkit.train.metrics import read_metrics
from contrastkit.train.pretrain import pretrain
from contrastkit.train.resume import resume, resume_with
from contrastkit.train.run import run
from contrastkit.train.rundata import epoch_batches

TINY = {"limit": 64, "batch_size": 32, "epochs": 1, "quiet": True, "knn_k": 10, "device": "cpu"}


def tiny(**options) -> PretrainConfig:
    """A one-epoch run on 64 digits (``options`` override)."""
    return PretrainConfig(**{"data": "digits", **TINY, **options})


@pytest.mark.parametrize("method", ["simclr", "supcon", "ce"])
def test_one_epoch_per_method(tmp_path, method):
    out = tmp_path / method
    r = pretrain(tiny(method=method, out=str(out)))
    assert r.epochs == 1 and r.knn_acc is not None and 0 <= r.knn_acc <= 1
    assert math.isfinite(r.loss)
    for name in ["config.yaml", "metrics.jsonl", "checkpoints/last.pt", "similarity.npz"]:
        assert (out / name).is_file(), name
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["finished"] and ckpt["step"] == 2 and ckpt["config"]["method"] == method
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch", "augment"}
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s["kind"] for s in steps] == ["step", "step", "epoch"]
    text = (out / "config.yaml").read_text()
    assert "git_sha" in text and "torch:" in text and "seed: 0" in text
    assert "command: pretrain" in text and "resume" not in text


def test_pretrain_on_a_dataset_object_and_probe_it(tmp_path):
    class Blobs(torch.utils.data.Dataset):
        def __init__(self, n):
            g = torch.Generator().manual_seed(n)
            self.y = torch.randint(0, 2, (n,), generator=g)
            self.x = torch.rand(n, 1, 12, 12, generator=g) * 0.3 + self.y.view(-1, 1, 1, 1) * 0.6

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.x[i], int(self.y[i])

    train, test = Blobs(40), Blobs(20)
    out = tmp_path / "obj"
    cfg = PretrainConfig(
        method="supcon", out=str(out), epochs=2, batch_size=16, quiet=True, device="cpu"
    )
    r = pretrain(cfg, data=train, test_data=test)
    assert r.knn_acc is not None
    saved = load_checkpoint(out / "checkpoints" / "last.pt")["config"]
    assert saved["data"] == CUSTOM_DATA and saved["knn_k"] == 200  # a data set without a line
    probe_cfg = ProbeConfig(run_dir=str(out), epochs=5, device="cpu")
    probe = linear_probe(probe_cfg, train_data=train, test_data=test)
    assert probe["n_train"] == 40 and probe["test_acc"] >= 0.9
    with pytest.raises(ContrastkitError, match="Dataset object"):
        linear_probe(ProbeConfig(run_dir=str(out), device="cpu"))
    with pytest.raises(ContrastkitError, match="run on a Dataset object: pass it again as data="):
        resume(out)
    again = resume(out, data=train, test_data=test)
    assert again.epochs == 2 and again.already_finished


def test_bad_inputs(tmp_path):
    with pytest.raises(ContrastkitError, match="unknown option"):
        pretrain(from_dict(PretrainConfig, {"data": "digits", "epoch": 3}))
    with pytest.raises(
        ContrastkitError, match=r"--batch-size \(batch_size\) must be an integer >= 2"
    ):
        pretrain(PretrainConfig(data="digits", batch_size=1, out=str(tmp_path / "a")))
    with pytest.raises(ContrastkitError, match="unknown method"):
        pretrain(PretrainConfig(data="digits", method="byol", out=str(tmp_path / "b")))
    with pytest.raises(ContrastkitError, match="unknown model"):
        pretrain(tiny(model="vit", out=str(tmp_path / "c")))
    with pytest.raises(ContrastkitError, match="unknown data set"):
        pretrain(PretrainConfig(data="imagenet", out=str(tmp_path / "d")))
    with pytest.raises(ContrastkitError, match="must be int"):
        from_dict(PretrainConfig, {"epochs": "ten"})
    # data= and test_data= are for Dataset objects; a data set is named in the config
    with pytest.raises(ContrastkitError, match=r"data= is for a Dataset object, got 'digits'"):
        pretrain(tiny(out=str(tmp_path / "e")), data="digits")  # type: ignore[arg-type]
    with pytest.raises(ContrastkitError, match="test_data= is for a Dataset object in data="):
        pretrain(tiny(out=str(tmp_path / "f")), test_data=torch.utils.data.TensorDataset())
    with pytest.raises(ContrastkitError, match="stands for a Dataset object: pass it as data="):
        pretrain(tiny(data=CUSTOM_DATA, out=str(tmp_path / "g")))
    assert not any(tmp_path.iterdir())  # each refused before anything was created


def test_supcon_and_ce_need_labels(tmp_path):
    class Unlabelled(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.rand(1, 8, 8), None

    for method in ["supcon", "ce"]:
        with pytest.raises(ContrastkitError, match="needs labels"):
            pretrain(
                PretrainConfig(method=method, out=str(tmp_path / method), batch_size=4),
                data=Unlabelled(),
            )
    r = pretrain(
        PretrainConfig(
            method="simclr", out=str(tmp_path / "s"), batch_size=4, epochs=1, quiet=True
        ),
        data=Unlabelled(),
    )
    assert r.knn_acc is None  # no labels: no monitor


def test_existing_run_is_never_overwritten_and_resume_checks_options(tmp_path):
    out = tmp_path / "run"
    pretrain(tiny(method="ce", out=str(out)))
    before = (out / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ContrastkitError, match="already exists"):
        pretrain(tiny(method="ce", out=str(out)))
    assert (out / "checkpoints" / "last.pt").read_bytes() == before
    with pytest.raises(ContrastkitError, match="cannot resume with different options: epochs"):
        resume_with(out, {"epochs": 5}, command="pretrain")  # `pretrain --resume --epochs 5`
    with pytest.raises(ContrastkitError, match="cannot resume"):
        resume(tmp_path / "never")
    with pytest.raises(
        ContrastkitError, match=r"not on a Dataset object: resume it without data=$"
    ):
        resume(out, data=torch.utils.data.TensorDataset(torch.zeros(2, 1, 8, 8)))
    # resuming a finished run trains nothing and changes nothing, also after a move
    moved = tmp_path / "moved"
    out.rename(moved)
    r = resume(moved, quiet=True)
    assert r.epochs == 1 and r.run_dir == moved and not out.exists()
    out = moved
    assert torch.equal(
        load_checkpoint(out / "checkpoints" / "last.pt")["encoder"]["features.0.weight"],
        torch.load(__import__("io").BytesIO(before), weights_only=True)["encoder"][
            "features.0.weight"
        ],
    )


def test_epoch_batches_drop_last_and_small_sets():
    batches = epoch_batches(70, 32, seed=0, epoch=0)
    assert [len(b) for b in batches] == [32, 32]
    assert len(set(torch.cat(batches).tolist())) == 64
    assert [len(b) for b in epoch_batches(10, 32, seed=0, epoch=0)] == [10]


@pytest.mark.parametrize(("optimizer", "norm"), [("lars", "group"), ("adamw", "batch")])
def test_other_optimizers_and_batch_free_model(tmp_path, optimizer, norm):
    out = tmp_path / optimizer
    r = pretrain(tiny(method="simclr", optimizer=optimizer, norm=norm, out=str(out)))
    assert r.loss == r.loss
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["config"]["optimizer"] == optimizer
    if norm == "group":
        assert not any("running_mean" in k for k in [*ckpt["encoder"], *ckpt["head"]])


def _digits_logreg_accuracy() -> float:
    """Raw-pixel logistic regression on digits, computed from scikit-learn alone.

    The split and pixels as documented for the digits data set (stratified 80/20, seed 0;
    pixels 0-16 stored as round(v * 255 / 16), then scaled to 0-1) and the baseline's model
    (``LogisticRegression(max_iter=1000)``): the same number on the same machine, whatever
    lbfgs gives there.
    """
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = np.round(bunch.images.reshape(len(bunch.target), -1) * (255 / 16)) / 255
    train, test = train_test_split(
        np.arange(len(bunch.target)), test_size=0.2, stratify=bunch.target, random_state=0
    )
    model = LogisticRegression(max_iter=1000).fit(x[train], bunch.target[train])
    return float((model.predict(x[test]) == bunch.target[test]).mean())


@pytest.mark.slow
def test_run_resume_redoes_only_unfinished_methods(tmp_path):
    out = tmp_path / "cmp"
    opts = {
        "data": "digits",
        "limit": 64,
        "batch_size": 32,
        "epochs": 1,
        "quiet": True,
        "probe_epochs": 2,
        "device": "cpu",
        "out": str(out),
    }
    first = run(from_dict(RunConfig, {"method": "supcon,ce", **opts}))
    assert first.dir == out and [r["method"] for r in first.rows] == ["supcon", "ce"]
    expected = _digits_logreg_accuracy()
    assert first.baselines is not None and first.baselines["logreg"] == expected
    row = next(line for line in first.table.splitlines() if "logistic regression" in line)
    assert row.split("|")[8].strip() == f"{100 * expected:.1f}"  # the linear-probe column
    ce_ckpt = (out / "ce" / "checkpoints" / "last.pt").read_bytes()
    (out / "supcon" / "probe.json").unlink()
    # `run --resume` given the run's own options again
    given = {k: v for k, v in opts.items() if k != "out"}
    again = resume_with(out, {"method": "supcon,ce", **given}, command="run")
    assert (out / "supcon" / "probe.json").is_file()
    assert (out / "ce" / "checkpoints" / "last.pt").read_bytes() == ce_ckpt  # untouched
    assert again.rows[1] == first.rows[1]
    with pytest.raises(ContrastkitError, match="already exists"):
        run(RunConfig(method="ce", pretrain=PretrainConfig(**{**TINY, "out": str(out)})))


def test_precision_names_and_devices():
    from contrastkit.train.device import autocast_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("auto", cuda) is torch.float16
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("fp16", cuda) is torch.float16
    with pytest.raises(ContrastkitError, match="fp16 needs CUDA"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(ContrastkitError, match="unknown precision 'half'"):
        autocast_dtype("half", cpu)


@pytest.mark.parametrize("has_kernels", [False, True, None])
def test_bf16_on_a_cpu_without_onednn_bfloat16_warns_once(monkeypatch, has_kernels):
    import warnings

    from contrastkit.train import device

    monkeypatch.setattr(device, "cpu_has_onednn_bf16", lambda: has_kernels)
    device._warn_slow_bf16.cache_clear()
    cpu = torch.device("cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert device.autocast_dtype("fp32", cpu) is None  # other precisions never warn
        assert device.autocast_dtype("auto", cpu) is None
        assert [w for w in caught if issubclass(w.category, UserWarning)] == []
        assert device.autocast_dtype("bf16", cpu) is torch.bfloat16
        assert device.autocast_dtype("bf16", cpu) is torch.bfloat16  # warned once only
    device._warn_slow_bf16.cache_clear()
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if has_kernels is False:
        assert len(messages) == 1 and "train with precision fp32" in messages[0]
    else:  # kernels there, or torch cannot tell: nothing to warn about
        assert messages == []


def test_onednn_bf16_probe_agrees_with_the_cpu_capability():
    """The probe must answer (not None) where oneDNN is built in, and agree with the ISA."""
    import platform

    from contrastkit.train.device import cpu_has_onednn_bf16

    answer = cpu_has_onednn_bf16()
    if not torch.backends.mkldnn.is_available():
        assert answer is None
        pytest.skip("torch is built without oneDNN: the probe answers None (checked)")
    assert answer in (True, False)
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"the ISA check knows x86-64 only, this machine is {platform.machine()}")
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        assert answer is True, capability
    cpuinfo = Path("/proc/cpuinfo")
    if capability in ("DEFAULT", "NO AVX", "AVX2") and cpuinfo.is_file():
        flags = set(cpuinfo.read_text().split())
        if not flags & {"avx512f", "avx_ne_convert"}:  # oneDNN's bf16 needs one of them
            assert answer is False, capability


def test_bad_precision_is_rejected_before_training(tmp_path):
    with pytest.raises(ContrastkitError, match="unknown precision"):
        pretrain(tiny(precision="int8", out=str(tmp_path / "a")))
    with pytest.raises(ContrastkitError, match="fp16 needs CUDA"):
        pretrain(tiny(precision="fp16", out=str(tmp_path / "b")))
    assert not any(tmp_path.iterdir())


def test_bf16_training_and_features_follow_float32(tmp_path):
    """A bf16 run trains (finite loss, weights stay float32) and its features match float32's."""
    from contrastkit.train.evaluate import load_encoder
    from contrastkit.train.features import extract_features

    out = tmp_path / "bf16"
    r = pretrain(tiny(method="supcon", precision="bf16", out=str(out)))
    assert math.isfinite(r.loss) and r.knn_acc is not None
    run = load_encoder(out, "cpu")
    assert run.feature_options == {"amp_dtype": torch.bfloat16, "channels_last": True}
    assert all(p.dtype == torch.float32 for p in run.encoder.parameters())
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    kw = {"mean": run.shape.mean, "std": run.shape.std}
    f32 = extract_features(run.encoder, images, **kw)
    f16 = extract_features(run.encoder, images, amp_dtype=torch.bfloat16, channels_last=True, **kw)
    assert f16.dtype == torch.float32
    # bfloat16 keeps 8 mantissa bits: relative error of a few 1e-3 per layer
    cos = torch.nn.functional.cosine_similarity(f32, f16, dim=1)
    assert cos.min() > 0.99
    assert not torch.equal(f32, f16)  # the autocast really ran in bfloat16


def test_under_bf16_only_the_network_is_autocast_and_the_loss_is_float32():
    from contrastkit.losses import supcon
    from contrastkit.train.loop import compute_loss
    from contrastkit.train.networks import DataShape
    from contrastkit.train.recipes import resolve
    from contrastkit.train.state import build_training_state

    cfg = resolve(PretrainConfig(data="digits", model="small_cnn", precision="bf16", out="unused"))
    shape = DataShape(1, 8, 10, [0.5], [0.25], [str(i) for i in range(10)])
    state = build_training_state(cfg, shape, 64, torch.device("cpu"))
    views = torch.randn(16, 2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(16) % 4
    loss = compute_loss(cfg, state, views, labels)
    x = views.flatten(0, 1).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = state.network(x)
        in_bf16 = supcon(z.float().view(16, 2, -1), labels, cfg.temperature)
    assert z.dtype == torch.bfloat16  # the network did run in bfloat16
    expected = supcon(z.float().view(16, 2, -1), labels, cfg.temperature)
    assert loss.dtype == torch.float32 and torch.equal(loss, expected)
    assert not torch.equal(in_bf16, expected)  # a loss under autocast would differ


def test_fp16_on_the_cpu_fails_before_run_does_any_work(tmp_path):
    recipe = PretrainConfig(data="digits", precision="fp16", out=str(tmp_path / "r"), quiet=True)
    with pytest.raises(ContrastkitError, match="fp16 needs CUDA"):
        run(RunConfig(method="ce", pretrain=recipe))
    assert not (tmp_path / "r").exists()


def test_the_knn_monitor_does_not_change_training(tmp_path):
    """Weights after training are bit-identical with the monitor every epoch, only at the end,
    or never (``final_knn=False``, as ``contrastkit run`` calls it)."""
    runs, monitored = {}, {}
    for every, final in ((1, True), (0, True), (0, False)):
        out = tmp_path / f"every{every}-{final}"
        r = pretrain(
            tiny(method="supcon", out=str(out), knn_every=every, epochs=2), final_knn=final
        )
        runs[every, final] = load_checkpoint(out / "checkpoints" / "last.pt")
        epochs = [m for m in read_metrics(out) if m["kind"] == "epoch"]
        monitored[every, final] = [m["knn_acc"] is not None for m in epochs]
        assert (r.knn_acc is not None) == final
    assert monitored == {
        (1, True): [True, True],
        (0, True): [False, True],
        (0, False): [False, False],
    }
    for part in ("encoder", "head"):
        a = runs[1, True][part]
        for other in ((0, True), (0, False)):
            b = runs[other][part]
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
