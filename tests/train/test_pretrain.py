import json
import math
from pathlib import Path

import pytest
import torch

from contrastkit.errors import ContrastkitError
from contrastkit.train import linear_probe, pretrain
from contrastkit.train.checkpoint import load_checkpoint
from contrastkit.train.config import PretrainConfig, from_dict
from contrastkit.train.metrics import read_metrics
from contrastkit.train.rundata import epoch_batches

TINY = {"limit": 64, "batch_size": 32, "epochs": 1, "quiet": True, "knn_k": 10, "device": "cpu"}


@pytest.mark.parametrize("method", ["simclr", "supcon", "ce"])
def test_one_epoch_per_method(tmp_path, method):
    out = tmp_path / method
    r = pretrain(data="digits", method=method, out=str(out), **TINY)
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
    r = pretrain(
        data=train,
        test_data=test,
        method="supcon",
        out=str(out),
        epochs=2,
        batch_size=16,
        quiet=True,
        device="cpu",
    )
    assert r.knn_acc is not None
    probe = linear_probe(out, train_data=train, test_data=test, epochs=5, device="cpu")
    assert probe["n_train"] == 40 and probe["test_acc"] >= 0.9
    with pytest.raises(ContrastkitError, match="Dataset object"):
        linear_probe(out, device="cpu")
    with pytest.raises(ContrastkitError, match="run on a Dataset object: pass it again as data="):
        pretrain(out=str(out), resume=True)
    assert pretrain(data=train, test_data=test, out=str(out), resume=True).epochs == 2


def test_bad_inputs(tmp_path):
    with pytest.raises(ContrastkitError, match="unknown option"):
        pretrain(data="digits", epoch=3)
    with pytest.raises(
        ContrastkitError, match=r"--batch-size \(batch_size\) must be an integer >= 2"
    ):
        pretrain(data="digits", batch_size=1, out=str(tmp_path / "a"))
    with pytest.raises(ContrastkitError, match="unknown method"):
        pretrain(data="digits", method="byol", out=str(tmp_path / "b"))
    with pytest.raises(ContrastkitError, match="unknown model"):
        pretrain(data="digits", model="vit", out=str(tmp_path / "c"), **TINY)
    with pytest.raises(ContrastkitError, match="unknown data set"):
        pretrain(data="imagenet", out=str(tmp_path / "d"))
    with pytest.raises(ContrastkitError, match="must be int"):
        from_dict(PretrainConfig, {"epochs": "ten"})


def test_supcon_and_ce_need_labels(tmp_path):
    class Unlabelled(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.rand(1, 8, 8), None

    for method in ["supcon", "ce"]:
        with pytest.raises(ContrastkitError, match="needs labels"):
            pretrain(data=Unlabelled(), method=method, out=str(tmp_path / method), batch_size=4)
    r = pretrain(
        data=Unlabelled(),
        method="simclr",
        out=str(tmp_path / "s"),
        batch_size=4,
        epochs=1,
        quiet=True,
    )
    assert r.knn_acc is None  # no labels: no monitor


def test_existing_run_is_never_overwritten_and_resume_checks_options(tmp_path):
    out = tmp_path / "run"
    pretrain(data="digits", method="ce", out=str(out), **TINY)
    before = (out / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ContrastkitError, match="already exists"):
        pretrain(data="digits", method="ce", out=str(out), **TINY)
    assert (out / "checkpoints" / "last.pt").read_bytes() == before
    with pytest.raises(ContrastkitError, match="cannot resume with different options: epochs"):
        pretrain(out=str(out), resume=True, epochs=5)
    with pytest.raises(ContrastkitError, match="cannot resume"):
        pretrain(out=str(tmp_path / "never"), resume=True)
    # resuming a finished run trains nothing and changes nothing, also after a move
    moved = tmp_path / "moved"
    out.rename(moved)
    r = pretrain(out=str(moved), resume=True, quiet=True)
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
    r = pretrain(
        data="digits", method="simclr", optimizer=optimizer, norm=norm, out=str(out), **TINY
    )
    assert r.loss == r.loss
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["config"]["optimizer"] == optimizer
    if norm == "group":
        assert not any("running_mean" in k for k in [*ckpt["encoder"], *ckpt["head"]])


@pytest.mark.slow
def test_run_resume_redoes_only_unfinished_methods(tmp_path):
    from contrastkit.train import run

    out = tmp_path / "cmp"
    opts = {
        "limit": 64,
        "batch_size": 32,
        "epochs": 1,
        "quiet": True,
        "probe_epochs": 2,
        "device": "cpu",
    }
    first = run(data="digits", methods="supcon,ce", out=str(out), **opts)
    assert [r["method"] for r in first["rows"]] == ["supcon", "ce"]
    assert "96.7" in first["table"]
    ce_ckpt = (out / "ce" / "checkpoints" / "last.pt").read_bytes()
    (out / "supcon" / "probe.json").unlink()
    again = run(data="digits", methods="supcon,ce", out=str(out), resume=True, **opts)
    assert (out / "supcon" / "probe.json").is_file()
    assert (out / "ce" / "checkpoints" / "last.pt").read_bytes() == ce_ckpt  # untouched
    assert again["rows"][1] == first["rows"][1]
    with pytest.raises(ContrastkitError, match="already exists"):
        run(data="digits", methods="ce", out=str(out), **opts)


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
        return
    assert answer in (True, False)
    if platform.machine() not in ("x86_64", "AMD64"):
        return
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
        pretrain(data="digits", precision="int8", out=str(tmp_path / "a"), **TINY)
    with pytest.raises(ContrastkitError, match="fp16 needs CUDA"):
        pretrain(data="digits", precision="fp16", out=str(tmp_path / "b"), **TINY)


def test_bf16_training_and_features_follow_float32(tmp_path):
    """A bf16 run trains (finite loss, weights stay float32) and its features match float32's."""
    from contrastkit.train.evaluate import load_encoder
    from contrastkit.train.features import extract_features

    out = tmp_path / "bf16"
    r = pretrain(data="digits", method="supcon", precision="bf16", out=str(out), **TINY)
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
    from contrastkit.train.pretrain import resolve_config
    from contrastkit.train.state import build_training_state

    opts = {"data": "digits", "model": "small_cnn", "precision": "bf16", "out": "unused"}
    cfg = resolve_config(opts, False)
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


def test_configs_written_before_precision_still_load_and_resume(tmp_path):
    import yaml

    from contrastkit.train.evaluate import load_encoder

    assert from_dict(PretrainConfig, {"amp": False}).precision == "fp32"
    assert from_dict(PretrainConfig, {"amp": True}).precision == "auto"
    out = tmp_path / "old"
    pretrain(data="digits", method="ce", out=str(out), **{**TINY, "epochs": 1})
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    del cfg["precision"]
    cfg["amp"] = True  # what runs saved before `precision` hold
    cfg["epochs"] = 2
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = pretrain(out=str(out), resume=True, quiet=True)
    assert r.epochs == 2
    assert load_encoder(out, "cpu").feature_options["amp_dtype"] is None


def test_fp16_on_the_cpu_fails_before_run_does_any_work(tmp_path):
    from contrastkit.train import run

    with pytest.raises(ContrastkitError, match="fp16 needs CUDA"):
        run(data="digits", methods="ce", precision="fp16", out=str(tmp_path / "r"), quiet=True)
    assert not (tmp_path / "r").exists()


def test_the_knn_monitor_does_not_change_training(tmp_path):
    """Weights after training are bit-identical with the monitor every epoch, only at the end,
    or never (``final_knn=False``, as ``contrastkit run`` calls it)."""
    runs, monitored = {}, {}
    for every, final in ((1, True), (0, True), (0, False)):
        out = tmp_path / f"every{every}-{final}"
        r = pretrain(
            data="digits",
            method="supcon",
            out=str(out),
            knn_every=every,
            final_knn=final,
            **{**TINY, "epochs": 2},
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
