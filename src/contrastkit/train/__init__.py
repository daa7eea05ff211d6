"""Training: configs, the pretraining loop, linear probe, kNN, schedules, checkpoints, reports.

Nothing is imported here: ``contrastkit.train.config`` (and so the CLI's ``--help``) must load
without torch. The functions live in their modules and in :mod:`contrastkit` itself.
"""
