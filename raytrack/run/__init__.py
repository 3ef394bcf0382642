"""A training run: its directory (:mod:`raytrack.run.directory`: what it trains, where its
files lie, loading its checkpoint) and the pipeline that fills it
(:mod:`raytrack.run.pipeline`: train, then export and evaluate the model).

The two are imported separately on purpose: evaluation reads a run directory and the pipeline
calls evaluation, so this package's ``__init__`` imports neither.
"""
