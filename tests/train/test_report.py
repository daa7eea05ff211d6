import json
import shutil
import statistics
from pathlib import Path

import pytest

from contrastkit.cli import main
from contrastkit.errors import ContrastkitError
from contrastkit.train.config import PretrainConfig, ProbeConfig, RunConfig, from_dict
from contrastkit.train.report import method_row
from contrastkit.train.run import run
from contrastkit.train.summary import seed_summary

TINY = {
    "data": "digits",
    "limit": 64,
    "batch_size": 32,
    "epochs": 1,
    "quiet": True,
    "device": "cpu",
    "knn_k": 10,
    "probe_epochs": 3,
}


def run_config(**options) -> RunConfig:
    """A tiny ``run`` on digits (``options`` override ``TINY``)."""
    return from_dict(RunConfig, {**TINY, **options})


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    """Three real `run`s of simclr and ce that differ only in the seed."""
    root = tmp_path_factory.mktemp("seeds")
    dirs = []
    for seed in (0, 1, 2):
        out = root / f"s{seed}"
        run(run_config(method="simclr,ce", out=str(out), seed=seed))
        dirs.append(out)
    return dirs


def _read(d, name):
    return json.loads((d / name).read_text())


def test_eval_seconds_are_recorded(three_seeds):
    ce = three_seeds[0] / "ce"
    knn, probe, found = (_read(ce, f"{f}.json") for f in ("knn", "probe", "retrieval"))
    assert knn["seconds"] > 0 and probe["seconds"] > 0 and found["seconds"] > 0
    total = knn["seconds"] + probe["seconds"] + found["seconds"]
    assert method_row(ce)["eval_seconds"] == pytest.approx(total)
    table = (three_seeds[0] / "table.md").read_text().splitlines()
    assert table[0].endswith("| P@1 % | MAP@R % |")
    ce_row = next(line for line in table if line.startswith("| ce |"))
    assert ce_row.endswith(
        f"| {100 * found['precision_at_1']:.1f} | {100 * found['map_at_r']:.1f} |"
    )
    assert all(line.count("|") == table[0].count("|") for line in table)


def test_eval_seconds_add_those_of_the_validation_files(three_seeds, tmp_path):
    ce = Path(shutil.copytree(three_seeds[0] / "ce", tmp_path / "ce"))
    before = method_row(ce)["eval_seconds"]
    for name, seconds in (("knn_val", 1.5), ("probe_val", 2.25), ("retrieval_val", 4.0)):
        (ce / f"{name}.json").write_text(json.dumps({"seconds": seconds}))
    assert method_row(ce)["eval_seconds"] == pytest.approx(before + 7.75)


def test_mean_and_sample_std_over_seeds(three_seeds):
    s = seed_summary(three_seeds)
    rows = {r["method"]: r for r in s["rows"]}
    assert set(rows) == {"simclr", "ce"} and rows["ce"]["seeds"] == [0, 1, 2]
    for method, row in rows.items():
        probe = [_read(d / method, "probe.json")["test_acc"] for d in three_seeds]
        knn = [_read(d / method, "knn.json")["test_acc"] for d in three_seeds]
        assert row["n"] == 3
        assert row["probe_acc"] == pytest.approx((statistics.mean(probe), statistics.stdev(probe)))
        assert row["knn_acc"] == pytest.approx((statistics.mean(knn), statistics.stdev(knn)))
    heads = [_read(d / "ce", "probe.json")["head_test_acc"] for d in three_seeds]
    assert rows["ce"]["head_acc"][0] == pytest.approx(statistics.mean(heads))
    assert rows["simclr"]["head_acc"] is None
    m, sd = rows["ce"]["probe_acc"]
    assert "| ce | small_cnn | 1 | 0, 1, 2 |" in s["table"]
    assert f"{100 * m:.2f} ± {100 * sd:.2f}" in s["table"]
    assert len(s["baselines"]) == 1 and "raw pixels: logistic regression" in s["table"]


def test_summary_shows_the_retrieval_mean_and_std_over_seeds(three_seeds, tmp_path):
    s = seed_summary(three_seeds)
    table = s["table"].splitlines()
    assert table[0].endswith("| own head acc % | P@1 % | MAP@R % |")
    assert all(line.count("|") == table[0].count("|") for line in table)  # baselines too
    rows = {r["method"]: r for r in s["rows"]}
    for method, row in rows.items():
        found = [_read(d / method, "retrieval.json") for d in three_seeds]
        for key in ("precision_at_1", "map_at_r"):
            values = [f[key] for f in found]
            assert row[key] == pytest.approx((statistics.mean(values), statistics.stdev(values)))
        (p1, p1_sd), (mapr, mapr_sd) = row["precision_at_1"], row["map_at_r"]
        line = next(line for line in table if line.startswith(f"| {method} |"))
        assert line.endswith(
            f"| {100 * p1:.2f} ± {100 * p1_sd:.2f} | {100 * mapr:.2f} ± {100 * mapr_sd:.2f} |"
        )
    # a seed without retrieval.json: its method has no retrieval mean; none at all: no columns
    lacking = _copy(three_seeds[2], tmp_path)
    (lacking / "ce" / "retrieval.json").unlink()
    rows = {r["method"]: r for r in seed_summary([*three_seeds[:2], lacking])["rows"]}
    assert rows["ce"]["map_at_r"] is None and rows["simclr"]["map_at_r"] is not None
    (lacking / "simclr" / "retrieval.json").unlink()
    table = seed_summary([lacking])["table"].splitlines()
    assert "P@1" not in table[0] and all(line.count("|") == 10 for line in table)


def test_one_run_has_no_std_and_duplicates_count_once(three_seeds):
    s = seed_summary([three_seeds[0], three_seeds[0] / "ce", three_seeds[0]])
    rows = {r["method"]: r for r in s["rows"]}
    assert rows["ce"]["n"] == 1 and rows["ce"]["probe_acc"][1] is None
    assert " ± " not in s["table"]


def test_runs_with_another_recipe_are_not_averaged(three_seeds, tmp_path):
    other = tmp_path / "lr"
    run(run_config(method="ce", out=str(other), lr=0.05))
    with pytest.raises(ContrastkitError, match="differ in lr"):
        seed_summary([three_seeds[0], other])
    with pytest.raises(ContrastkitError, match="does not exist"):
        seed_summary([tmp_path / "missing"])


def test_summarize_command(three_seeds, tmp_path, capsys):
    out = tmp_path / "seeds.md"
    assert main(["summarize", *map(str, three_seeds), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| simclr | small_cnn | 1 | 0, 1, 2 |" in printed
    assert out.read_text().strip() in printed
    assert main(["summarize", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture(scope="module")
def val_seeds(tmp_path_factory):
    """Two real `run`s of ce with a validation split, each also evaluated as a transfer."""
    from contrastkit.train.config import KnnConfig, RetrievalConfig
    from contrastkit.train.evaluate import knn, linear_probe, retrieval

    root = tmp_path_factory.mktemp("val")
    dirs = []
    for seed in (0, 1):
        out = root / f"s{seed}"
        run(run_config(method="ce", out=str(out), seed=seed, val_fraction=0.25))
        ce = str(out / "ce")
        # the transfer's data set is the digits by name: files of their own, probe-digits.json…
        knn(KnnConfig(run_dir=ce, data="digits", k=5, device="cpu"))
        linear_probe(ProbeConfig(run_dir=ce, data="digits", epochs=2, device="cpu"))
        retrieval(RetrievalConfig(run_dir=ce, data="digits", device="cpu"))
        dirs.append(out)
    return dirs


@pytest.mark.parametrize(
    ("split", "data", "files", "head"),
    [
        ("val", None, ("probe_val", "knn_val", "retrieval_val"), True),
        ("test", "digits", ("probe-digits", "knn-digits", "retrieval-digits"), False),
    ],
)
def test_summary_of_the_validation_split_or_a_transfer_reads_their_files(
    val_seeds, split, data, files, head
):
    s = seed_summary(val_seeds, split=split, data=data)
    (row,) = s["rows"]
    probe, knn_, found = ([_read(d / "ce", f"{f}.json") for d in val_seeds] for f in files)
    key = f"{split}_acc"
    for got, records, name in (
        (row["probe_acc"], probe, key),
        (row["knn_acc"], knn_, key),
        (row["precision_at_1"], found, "precision_at_1"),
        (row["map_at_r"], found, "map_at_r"),
    ):
        values = [r[name] for r in records]
        assert got == pytest.approx((statistics.mean(values), statistics.stdev(values)))
    test = [_read(d / "ce", "probe.json")["test_acc"] for d in val_seeds]
    assert row["probe_acc"][0] != pytest.approx(statistics.mean(test))  # not the test split's
    if head:
        assert row["head_acc"][0] == pytest.approx(statistics.mean(r[f"head_{key}"] for r in probe))
    else:  # a transfer has no own head, and its evaluations are the ones timed
        assert row["head_acc"] is None
        seconds = [
            sum(r["seconds"] for r in (p, k, f)) for p, k, f in zip(probe, knn_, found, strict=True)
        ]
        assert row["eval_seconds"][0] == pytest.approx(statistics.mean(seconds))
    scored = f" ({data}, {split})" if data else f" ({split})"
    header = s["table"].splitlines()[0]
    assert f"| linear-probe acc %{scored} |" in header and header.endswith(f"MAP@R %{scored} |")
    assert s["baselines"] == [] and "raw pixels" not in s["table"]  # scored on test, own data


def test_summary_refuses_a_split_or_transfer_no_run_has(val_seeds, three_seeds, capsys):
    with pytest.raises(ContrastkitError, match="unknown evaluation split 'train' for --split"):
        seed_summary(val_seeds, split="train")
    with pytest.raises(ContrastkitError, match="for --data"):
        seed_summary(val_seeds, data=" ")
    with pytest.raises(ContrastkitError, match="--split val is the run's own validation split"):
        seed_summary(val_seeds, split="val", data="digits")  # a transfer is scored on test
    with pytest.raises(
        ContrastkitError,
        match=r"^--data cifar10: none of the 2 runs has probe-cifar10.json or knn-cifar10.json \(",
    ):
        seed_summary(val_seeds, data="cifar10")
    with pytest.raises(
        ContrastkitError,
        match=r"^--split val: none of the 6 runs has probe_val.json or knn_val.json \(.*--val-fr",
    ):
        seed_summary(three_seeds, split="val")  # runs without a validation split
    assert main(["summarize", *map(str, val_seeds), "--split", "val"]) == 0
    assert "| ce | small_cnn | 1 | 0, 1 |" in capsys.readouterr().out
    assert main(["summarize", *map(str, val_seeds), "--data", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert "linear-probe RUN --data cifar10" in err and err.count("\n") == 1
    assert main(["summarize", *map(str, val_seeds), "--split", "train"]) == 2
    assert "unknown evaluation split 'train'" in capsys.readouterr().err


def test_a_seed_without_the_files_leaves_its_method_blank(val_seeds, tmp_path):
    lacking = _copy(val_seeds[1], tmp_path)
    for f in (lacking / "ce").glob("*-digits.json"):
        f.unlink()
    (lacking / "ce" / "probe_val.json").unlink()
    for split, data in (("test", "digits"), ("val", None)):
        (row,) = seed_summary([val_seeds[0], lacking], split=split, data=data)["rows"]
        assert row["probe_acc"] is None and row["seeds"] == [0, 1]
        assert (row["knn_acc"] is None) == (data is not None)  # knn_val.json is still there
    # the validation files count among the run's own evaluations, whatever split is shown
    (row,) = seed_summary(val_seeds, split="val")["rows"]
    assert row["eval_seconds"] == seed_summary(val_seeds)["rows"][0]["eval_seconds"]


def test_the_knn_monitor_stands_in_only_for_the_split_it_scored(tmp_path):
    from contrastkit.train.pretrain import pretrain

    out = tmp_path / "monitored"
    tiny = {k: v for k, v in TINY.items() if k != "probe_epochs"}
    pretrain(PretrainConfig(method="ce", out=str(out), val_fraction=0.25, **tiny))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["kind"] == "epoch" and last["knn_split"] == "val"
    assert method_row(out, "val")["knn_acc"] == last["knn_acc"]
    assert method_row(out)["knn_acc"] is None  # never scored on test
    assert method_row(out, data="digits")["knn_acc"] is None
    # a run written before "knn_split" existed: its monitor scored the test split
    del last["knn_split"]
    (out / "metrics.jsonl").write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    assert method_row(out)["knn_acc"] == last["knn_acc"]
    assert method_row(out, "val")["knn_acc"] is None
    with pytest.raises(ContrastkitError, match="unknown data set '' for --data"):
        method_row(out, data="")


def test_report_of_a_run_that_was_never_evaluated(tmp_path):
    from contrastkit.train.pretrain import pretrain
    from contrastkit.train.report import build_report

    out = tmp_path / "bare"
    tiny = {k: v for k, v in TINY.items() if k != "probe_epochs"}
    pretrain(PretrainConfig(method="ce", out=str(out), **tiny))
    row = method_row(out)
    assert row["eval_seconds"] is None and row["probe_acc"] is None
    assert build_report(out).is_file()


def test_repeated_seeds_and_other_probe_settings_are_refused(three_seeds, tmp_path):
    from contrastkit.train.evaluate import linear_probe

    with pytest.raises(ContrastkitError, match="repeat a seed"):
        seed_summary([three_seeds[0], three_seeds[1], _copy(three_seeds[1], tmp_path)])
    again = _copy(three_seeds[2], tmp_path / "b")
    linear_probe(ProbeConfig(run_dir=str(again / "ce"), epochs=1, device="cpu", quiet=True))
    with pytest.raises(ContrastkitError, match="probe_epochs"):
        seed_summary([three_seeds[0], again])


def _copy(src, dst_root):
    import shutil

    dst = dst_root / f"copy-{src.name}"
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def channels_first(tmp_path_factory):
    """A fourth seed of ce whose recipe differs in a key that does not change the math."""
    out = tmp_path_factory.mktemp("cf") / "s3"
    run(run_config(method="ce", out=str(out), seed=3, channels_last=False))
    return out


def test_pool_averages_over_a_named_key_and_says_which_seed_had_which(three_seeds, channels_first):
    other = channels_first
    with pytest.raises(ContrastkitError, match=r"differ in channels_last.*--pool channels_last"):
        seed_summary([*three_seeds, other])
    s = seed_summary([*three_seeds, other], pool=["channels_last", "channels_last"])
    rows = {r["method"]: r for r in s["rows"]}
    assert rows["ce"]["seeds"] == [0, 1, 2, 3] and rows["simclr"]["n"] == 3
    assert rows["ce"]["pooled"] == {"channels_last": {"True": [0, 1, 2], "False": [3]}}
    assert rows["simclr"]["pooled"] == {}  # one value only: nothing to say
    probe = [_read(d / "ce", "probe.json")["test_acc"] for d in three_seeds]
    probe.append(_read(other / "ce", "probe.json")["test_acc"])
    assert rows["ce"]["probe_acc"] == pytest.approx(
        (statistics.mean(probe), statistics.stdev(probe))
    )
    assert s["table"].endswith(
        "Pooled over channels_last: ce: channels_last True (seeds 0, 1, 2); False (seed 3)."
    )
    assert "Pooled" not in seed_summary(three_seeds, pool=["channels_last"])["table"]


def test_pool_refuses_row_keys_and_unknown_keys(three_seeds):
    with pytest.raises(ContrastkitError, match="cannot pool over method, model"):
        seed_summary(three_seeds, pool=["model", "method"])
    with pytest.raises(ContrastkitError, match="cannot pool over precison: no run's config"):
        seed_summary(three_seeds, pool=["precison"])


def test_summarize_command_pools(three_seeds, channels_first, capsys):
    other = channels_first
    assert main(["summarize", *map(str, three_seeds), str(other)]) == 2
    assert "--pool channels_last" in capsys.readouterr().err
    assert (
        main(["summarize", *map(str, three_seeds), str(other), "--pool", "lr,channels_last"]) == 0
    )
    printed = capsys.readouterr().out
    assert "| ce | small_cnn | 1 | 0, 1, 2, 3 |" in printed
    assert "Pooled over lr, channels_last: ce: channels_last True" in printed


def test_baselines_that_show_the_same_numbers_are_listed_once(three_seeds, tmp_path):
    other = _copy(three_seeds[0], tmp_path)
    base = _read(other, "baselines.json")
    (other / "baselines.json").write_text(json.dumps({**base, "logreg": base["logreg"] + 1e-6}))
    for d in (other, *(other / m for m in ("simclr", "ce"))):  # an independent seed
        text = (d / "config.yaml").read_text()
        (d / "config.yaml").write_text(text.replace("seed: 0", "seed: 9"))
    table = seed_summary([*three_seeds, other])["table"]
    assert table.count("raw pixels: logistic regression") == 1
    (other / "baselines.json").write_text(json.dumps({**base, "logreg": base["logreg"] + 0.01}))
    table = seed_summary([*three_seeds, other])["table"]
    assert table.count("raw pixels: logistic") == 2
    runs = ", ".join(map(str, three_seeds))
    assert f"| raw pixels: logistic regression ({runs}) |" in table
    assert f"| raw pixels: kNN (k=5) ({other}) |" in table


def test_report_shows_each_methods_configuration_and_the_retrieval(three_seeds):
    page = (three_seeds[0] / "report.html").read_text()
    sections = page.split("<h2>Configuration (")[1:]
    assert [s.split(")")[0] for s in sections] == ["simclr", "ce"]
    for section, method in zip(sections, ["simclr", "ce"], strict=True):
        assert f"method: {method}" in section.split("</pre>")[0]
    found = _read(three_seeds[0] / "ce", "retrieval.json")
    assert "<h2>Retrieval (against the training images)</h2>" in page
    cells = f"<td>ce</td><td>test ({found['n_queries']})</td><td>{100 * found['precision_at_1']:.1f}</td>"
    assert cells in page
    pixels = _read(three_seeds[0], "baselines.json")["retrieval"]
    row = f"<td>raw pixels</td><td>test ({pixels['n_queries']})</td><td>{100 * pixels['precision_at_1']:.1f}</td>"
    assert row in page
