"""Every bad input raises a ValueError that names the argument and says what was expected."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from contrastkit.losses import (
    InfoNCELoss,
    MarginPairLoss,
    NTXentLoss,
    SupConLoss,
    _validate,
    info_nce,
    margin_pair,
    nt_xent,
    reference,
    supcon,
)
from contrastkit.losses.tiled import tiled_log_sum_exp

Z = torch.randn(4, 3)
F3 = torch.randn(4, 2, 3)
NAN = torch.tensor([[0.0, float("nan")], [1.0, 1.0]])
INF = torch.tensor([[0.0, float("inf")], [1.0, 1.0]])
Y4, Y5 = torch.arange(4), torch.arange(5)

CASES = [
    # (call, expected message fragment)
    (lambda: nt_xent(torch.randn(4), torch.randn(4)), r"z1 must have 2 dimensions \(N, D\)"),
    (lambda: nt_xent(Z, torch.randn(5, 3)), r"z1 and z2 must have the same shape"),
    (lambda: nt_xent(Z, torch.randn(4, 2)), r"same shape \(N, D\), got \(4, 3\) and \(4, 2\)"),
    (lambda: nt_xent(torch.empty(0, 3), torch.empty(0, 3)), r"z1 must be non-empty"),
    (lambda: nt_xent(NAN, NAN.clone()), r"z1 must be finite, got 1 NaN/inf"),
    (lambda: nt_xent(Z, Z.clone(), 0.0), r"temperature must be a finite number > 0, got 0.0"),
    (lambda: nt_xent(Z, Z.clone(), -1.0), r"temperature must be a finite number > 0"),
    (lambda: nt_xent(Z, Z.clone(), float("inf")), r"temperature must be a finite number > 0"),
    (lambda: nt_xent(Z, Z.clone(), float("nan")), r"temperature must be a finite number > 0"),
    (lambda: nt_xent(Z, Z.clone(), torch.tensor([0.1])), r"0-dim tensor, got shape \(1,\)"),
    (lambda: nt_xent(Z, Z.clone(), "0.1"), r"temperature must be a float or a 0-dim tensor"),
    (lambda: nt_xent(Z, Z.clone(), impl="fast"), r"impl must be one of 'auto', 'reference'"),
    (lambda: nt_xent(Z.long(), Z.long()), r"z1 must be a floating-point tensor"),
    (lambda: nt_xent(Z.numpy(), Z), r"z1 must be a torch.Tensor of shape \(N, D\), got ndarray"),
    (lambda: supcon(Z), r"features must have 3 dimensions \(N, V, D\), got shape \(4, 3\)"),
    (lambda: supcon(F3, torch.arange(5)), r"labels must have one entry per sample: expected N"),
    (lambda: supcon(F3, torch.zeros(4, 1).long()), r"labels must have shape \(N,\)"),
    (lambda: supcon(F3, torch.zeros(4)), r"labels must be an integer tensor.*float32"),
    (lambda: supcon(F3, torch.zeros(4).bool()), r"labels must be an integer tensor.*bool"),
    (lambda: supcon(F3, [0, 1, 2, 3]), r"labels must be a torch.Tensor"),
    (lambda: supcon(torch.randn(4, 1, 3)), r"V = 1 view and labels is None"),
    (lambda: supcon(F3, contrast_mode="two"), r"contrast_mode must be one of 'all', 'one'"),
    (lambda: supcon(F3, base_temperature=0.0), r"base_temperature must be a finite number > 0"),
    (lambda: supcon(F3, temperature=0), r"temperature must be a finite number > 0"),
    (lambda: supcon(INF[:, None]), r"features must be finite"),
    (lambda: supcon(torch.empty(0, 2, 3)), r"features must be non-empty"),
    (lambda: supcon(F3, impl="tiledd"), r"impl must be one of"),
    # supcon's queue: keys (K, D) like the features, labels (K,) integers exactly when labels
    (
        lambda: supcon(F3, Y4, queue=(torch.randn(5, 2), Y5)),
        r"^queue keys must have the features' D = 3 \(dimension 1\), got shape \(5, 2\)$",
    ),
    (
        lambda: supcon(F3, queue=torch.randn(5)),
        r"^queue keys must have 2 dimensions \(K, D\) with D = 3, got shape \(5,\)$",
    ),
    (lambda: supcon(F3, queue=torch.empty(0, 3)), r"^queue keys must be non-empty"),
    (
        lambda: supcon(F3, queue=torch.randn(5, 3).long()),
        r"^queue keys must be a floating-point tensor",
    ),
    (
        lambda: supcon(F3, Y4, queue=(INF.repeat(1, 2)[:, :3], Y5[:2])),
        r"^queue keys must be finite, got 1 NaN/inf value\(s\)$",
    ),
    (
        lambda: supcon(F3, queue=torch.randn(5, 3).double()),
        r"^queue keys must have the dtype of features \(torch.float32\), got torch.float64$",
    ),
    (
        lambda: supcon(F3, queue=torch.randn(5, 3, device="meta")),
        r"^queue keys must hold values \(a tensor on cpu, cuda, \.\.\.\), got a tensor on the meta device$",
    ),
    (
        lambda: supcon(F3, Y4, queue=(torch.randn(5, 3), Y5.float())),
        r"^queue labels must be an integer tensor \(class indices\), got dtype torch.float32$",
    ),
    (
        lambda: supcon(F3, Y4, queue=(torch.randn(5, 3), Y5[:4])),
        r"^queue labels must have one entry per key: expected K = 5, got 4$",
    ),
    (
        lambda: supcon(F3, Y4, queue=(torch.randn(5, 3), Y5[:, None])),
        r"^queue labels must have shape \(K,\) = \(5,\), got shape \(5, 1\)$",
    ),
    (
        lambda: supcon(F3, Y4, queue=(torch.randn(5, 3), [0, 1, 2, 3, 4])),
        r"^queue labels must be a torch.Tensor of shape \(K,\), got list$",
    ),
    (
        lambda: supcon(F3, Y4, queue=(torch.randn(5, 3), Y5.to("meta"))),
        r"^queue labels must hold values",
    ),
    (
        lambda: supcon(F3, queue=(torch.randn(5, 3), Y5)),
        r"^queue labels need labels for the batch: with labels=None",
    ),
    (
        lambda: supcon(F3, Y4, queue=torch.randn(5, 3)),
        r"^queue must be \(keys, labels\) when labels is given",
    ),
    (
        lambda: supcon(F3, Y4, queue=(Z, Y4, Y4)),
        r"^queue must be None, a \(K, D\) tensor of keys or a pair .*, got tuple of length 3$",
    ),
    (
        lambda: supcon(F3, Y4, queue=0.5),
        r"^queue must be None, a \(K, D\) tensor of keys or a pair .*, got float$",
    ),
    (
        lambda: SupConLoss()(F3, Y4, torch.randn(5, 3)),
        r"^queue must be \(keys, labels\) when labels",
    ),
    (
        lambda: reference.supcon(F3, Y4, queue=(torch.randn(5, 2), Y5)),
        r"^queue keys must have the features' D = 3",
    ),
    (lambda: info_nce(Z, torch.randn(3, 3)), r"query and positive_key must have the same shape"),
    (lambda: info_nce(Z, Z, torch.randn(5, 2)), r"negative_keys must have D = 3"),
    (lambda: info_nce(Z, Z, torch.randn(4, 5, 3)), r"negative_keys must have 2 dimensions"),
    (
        lambda: info_nce(Z, Z, torch.randn(5, 3), negative_mode="paired"),
        r"negative_keys must have 3 dimensions \(N, M, D\) when paired",
    ),
    (
        lambda: info_nce(Z, Z, torch.randn(3, 5, 3), negative_mode="paired"),
        r"negative_keys must have N = 4",
    ),
    (lambda: info_nce(Z, Z, negative_mode="both"), r"negative_mode must be one of"),
    (lambda: info_nce(Z, Z, reduction="max"), r"reduction must be one of 'mean', 'sum', 'none'"),
    (lambda: info_nce(Z, Z, temperature=-0.1), r"temperature must be a finite number > 0"),
    (lambda: info_nce(Z, Z, NAN), r"negative_keys must be finite"),
    (lambda: margin_pair(Z, Z, torch.ones(3)), r"same must have shape \(N,\) = \(4,\)"),
    (lambda: margin_pair(Z, Z, torch.tensor([0, 1, 2, 1])), r"same must be bool or hold only 0/1"),
    (lambda: margin_pair(Z, torch.randn(4, 2), torch.ones(4)), r"x1 and x2 must have the same"),
    (lambda: margin_pair(Z, Z, torch.ones(4), margin=-1.0), r"margin must be a finite number >= 0"),
    (lambda: margin_pair(Z, Z, torch.ones(4), reduction="avg"), r"reduction must be one of"),
    (lambda: margin_pair(Z, Z, [1, 1, 1, 1]), r"same must be a torch.Tensor"),
    (lambda: NTXentLoss(temperature=0), r"temperature must be a finite number > 0"),
    (lambda: SupConLoss(contrast_mode="x"), r"contrast_mode must be one of"),
    (lambda: InfoNCELoss(reduction="x"), r"reduction must be one of"),
    (lambda: MarginPairLoss(margin=-2), r"margin must be a finite number >= 0"),
    # the oracles validate exactly like the fast code
    (lambda: reference.nt_xent(Z, torch.randn(5, 3)), r"z1 and z2 must have the same shape"),
    (lambda: reference.supcon(F3, torch.arange(3)), r"labels must have one entry per sample"),
    (lambda: reference.info_nce(Z, Z, reduction="x"), r"reduction must be one of"),
    (lambda: reference.margin_pair(Z, Z, torch.ones(5)), r"same must have shape"),
]


@pytest.mark.parametrize(("call", "message"), CASES, ids=[m for _, m in CASES])
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- options checked on every impl, even where that impl does not read them ---------------------

FUNCTIONS = {
    "nt_xent": lambda **kw: nt_xent(Z, Z.clone(), **kw),
    "supcon": lambda **kw: supcon(F3, **kw),
    "info_nce": lambda **kw: info_nce(Z, Z.clone(), **kw),
}
MODULES = {"NTXentLoss": NTXentLoss, "SupConLoss": SupConLoss, "InfoNCELoss": InfoNCELoss}
IMPLS = ("auto", "reference", "dense", "tiled")
# option: (expected message, {as shown in the message: bad value})
BAD_OPTIONS = {
    "tile_size": (
        r"tile_size must be None or an integer >= 1, got ",
        {"2.5": 2.5, "'big'": "big", "0": 0, "-3": -3, "True": True, "1.0": 1.0},
    ),
    "normalize": (
        r"normalize must be True or False, got ",
        {"'no'": "no", "1": 1, "None": None, "0.0": 0.0},
    ),
}
OPTION_CASES = [(option, shown) for option, (_, bad) in BAD_OPTIONS.items() for shown in bad]


def _raises_bad_option(option: str, shown: str):
    message, bad = BAD_OPTIONS[option]
    return pytest.raises(ValueError, match="^" + message + re.escape(shown) + "$"), bad[shown]


@pytest.mark.parametrize(("option", "shown"), OPTION_CASES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("loss", list(FUNCTIONS))
def test_bad_option_raises_on_every_impl(loss, impl, option, shown):
    raises, value = _raises_bad_option(option, shown)
    with raises:
        FUNCTIONS[loss](impl=impl, **{option: value})


@pytest.mark.parametrize(("option", "shown"), OPTION_CASES)
@pytest.mark.parametrize("module", list(MODULES))
def test_bad_option_raises_in_module(module, option, shown):
    raises, value = _raises_bad_option(option, shown)
    with raises:
        MODULES[module](**{option: value})


def test_bad_tile_size_raises_in_tiled_core():
    raises, value = _raises_bad_option("tile_size", "0")
    with raises:
        tiled_log_sum_exp(Z, Z, None, 0.1, tile_size=value)


@pytest.mark.parametrize("impl", IMPLS)
def test_good_tile_sizes_are_accepted(impl):
    for size in (None, 1, 3, np.int64(2)):
        assert torch.isfinite(nt_xent(Z, Z.clone(), impl=impl, tile_size=size))


@pytest.mark.parametrize(
    "call",
    [
        lambda: reference.nt_xent(Z, Z, normalize="no"),
        lambda: reference.supcon(F3, normalize="no"),
        lambda: reference.info_nce(Z, Z, normalize="no"),
    ],
    ids=["nt_xent", "supcon", "info_nce"],
)
def test_bad_normalize_raises_in_oracle(call):
    raises, _ = _raises_bad_option("normalize", "'no'")
    with raises:
        call()


# --- one dtype, one device, and values to compute with --------------------------------------------

D64 = Z.double()
MIXED_DTYPES = {
    # id: (call, the argument named, the first argument it is compared with, its impls)
    "z2 f64 after f32": (lambda impl: nt_xent(Z, D64, impl=impl), "z2", "z1", IMPLS),
    "z2 f32 after f64": (lambda impl: nt_xent(D64, Z, impl=impl), "z2", "z1", IMPLS),
    "z2 f32 after f16": (lambda impl: nt_xent(Z.half(), Z, impl=impl), "z2", "z1", IMPLS),
    "positive_key": (lambda impl: info_nce(Z, D64, impl=impl), "positive_key", "query", IMPLS),
    "unpaired negative_keys": (
        lambda impl: info_nce(Z, Z, D64[:2], impl=impl),
        "negative_keys",
        "query",
        IMPLS,
    ),
    "paired negative_keys": (
        lambda impl: info_nce(Z, Z, D64[:, None], negative_mode="paired", impl=impl),
        "negative_keys",
        "query",
        IMPLS,
    ),
    "x2": (
        lambda impl: margin_pair(Z, D64, torch.ones(4), impl=impl),
        "x2",
        "x1",
        ("auto", "reference", "dense"),
    ),
}


@pytest.mark.parametrize(
    ("case", "impl"), [(case, impl) for case, (*_, impls) in MIXED_DTYPES.items() for impl in impls]
)
def test_mixed_dtypes_raise(case, impl):
    call, name, first, _ = MIXED_DTYPES[case]
    message = rf"^{name} must have the dtype of {first} \(torch\.\w+\), got torch\.\w+$"
    with pytest.raises(ValueError, match=message):
        call(impl)


def test_temperature_of_another_dtype_is_cast_not_refused():
    # a float32 learnable τ beside half-precision (autocast) or float64 embeddings is usual
    tau = torch.tensor(0.5, requires_grad=True)
    loss = nt_xent(D64, D64.flip(0), tau)
    loss.backward()
    assert loss.dtype == torch.float64 and tau.grad.dtype == torch.float32


META = "meta"
META_CASES = {
    "z1": lambda: nt_xent(Z.to(META), Z),
    "z2": lambda: nt_xent(Z, Z.to(META)),
    "temperature": lambda: nt_xent(Z, Z, torch.tensor(0.1, device=META)),
    "features": lambda: supcon(F3.to(META)),
    "labels": lambda: supcon(F3, torch.arange(4, device=META)),
    "base_temperature": lambda: supcon(F3, base_temperature=torch.tensor(0.1, device=META)),
    "query": lambda: info_nce(Z.to(META), Z),
    "positive_key": lambda: info_nce(Z, Z.to(META)),
    "negative_keys": lambda: info_nce(Z, Z, Z.to(META)),
    "x1": lambda: margin_pair(Z.to(META), Z, torch.ones(4)),
    "x2": lambda: margin_pair(Z, Z.to(META), torch.ones(4)),
    "same": lambda: margin_pair(Z, Z, torch.ones(4, device=META)),
    "reference same": lambda: reference.margin_pair(Z, Z, torch.ones(4, device=META)),
    "reference features": lambda: reference.supcon(F3.to(META)),
}


@pytest.mark.parametrize("case", list(META_CASES))
def test_meta_device_is_refused(case):
    name = case.split()[-1]
    message = rf"^{name} must hold values \(a tensor on cpu, cuda, \.\.\.\), got a tensor on the meta device$"
    with pytest.raises(ValueError, match=message):
        META_CASES[case]()


def test_device_check_names_both_devices():
    # the one second device type of a CPU-only machine is meta, which the public functions refuse
    # earlier; the shared check itself compares any two devices
    with pytest.raises(
        ValueError, match=r"^labels must be on the device of features \(cpu\), got meta$"
    ):
        _validate.one_device(("features", F3), ("labels", torch.arange(4, device=META)))
    _validate.one_device(("features", F3), ("temperature", 0.1), ("labels", None))


CUDA_CASES = {
    "z2": lambda cuda: nt_xent(Z, Z.to(cuda)),
    "temperature": lambda cuda: nt_xent(Z, Z, torch.tensor(0.1, device=cuda)),
    "labels": lambda cuda: supcon(F3, torch.arange(4, device=cuda)),
    "negative_keys": lambda cuda: info_nce(Z, Z, Z.to(cuda)),
    "queue keys": lambda cuda: supcon(F3, queue=torch.randn(5, 3, device=cuda)),
    "queue labels": lambda cuda: supcon(F3, Y4, queue=(torch.randn(5, 3), Y5.to(cuda))),
    "same": lambda cuda: margin_pair(Z, Z, torch.ones(4, device=cuda)),
}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("case", list(CUDA_CASES))
def test_inputs_on_two_devices_raise(case):
    with pytest.raises(
        ValueError, match=rf"^{case} must be on the device of \w+ \(cpu\), got cuda:0$"
    ):
        CUDA_CASES[case](torch.device("cuda", 0))
