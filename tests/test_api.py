import inspect

import contrastkit


def test_top_level_functions_are_the_training_functions():
    from contrastkit.train import config
    from contrastkit.train.evaluate import embed, knn, linear_probe
    from contrastkit.train.pretrain import PretrainResult, pretrain
    from contrastkit.train.report import build_report
    from contrastkit.train.resume import resume
    from contrastkit.train.run import RunResult, run
    from contrastkit.train.summary import seed_summary

    assert contrastkit.pretrain is pretrain and contrastkit.run is run
    assert contrastkit.linear_probe is linear_probe and contrastkit.knn is knn
    assert contrastkit.embed is embed and contrastkit.report is build_report
    assert contrastkit.seed_summary is seed_summary and contrastkit.resume is resume
    assert contrastkit.PretrainResult is PretrainResult and contrastkit.RunResult is RunResult
    for name in ("PretrainConfig", "RunConfig", "ProbeConfig", "ProbeSettings", "KnnConfig"):
        assert getattr(contrastkit, name) is getattr(config, name)
    assert contrastkit.EmbedConfig is config.EmbedConfig
    assert issubclass(contrastkit.ContrastkitError, ValueError)
    # the config may be positional; every other argument is keyword-only: a positional call
    # with a data set is a TypeError, not a silent misuse
    for f in (pretrain, run):
        params = list(inspect.signature(f).parameters.values())
        assert params[0].name == "config" and params[0].kind == params[0].POSITIONAL_OR_KEYWORD
        assert all(p.kind == p.KEYWORD_ONLY for p in params[1:])
    params = list(inspect.signature(resume).parameters.values())
    assert params[0].name == "run_dir" and all(p.kind == p.KEYWORD_ONLY for p in params[1:])
