import inspect

import contrastkit


def test_top_level_functions_are_the_training_functions():
    from contrastkit.train import (
        build_report,
        embed,
        knn,
        linear_probe,
        pretrain,
        run,
        seed_summary,
    )

    assert contrastkit.pretrain is pretrain and contrastkit.run is run
    assert contrastkit.linear_probe is linear_probe and contrastkit.knn is knn
    assert contrastkit.embed is embed and contrastkit.report is build_report
    assert contrastkit.seed_summary is seed_summary
    assert issubclass(contrastkit.ContrastkitError, ValueError)
    # keyword-only: a positional call is a TypeError, not a silent misuse
    for f in (pretrain, run):
        assert all(
            p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD)
            for p in inspect.signature(f).parameters.values()
        )
