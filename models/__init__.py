"""Detection models: training, the model bundle, the registry, evaluation.

One concept per module (imports stay lazy here so `txmon --help` and Spark executors
that only unpickle a bundle do not pay for the rest):

- ``bundle``: :class:`~models.bundle.ModelBundle` — classifier + anomaly detector;
  vectorised ``score(frame) -> (fraud_probability, anomaly)`` and ``explain``.
- ``training``: :func:`~models.training.train` — labelled history -> bundle + metadata,
  time-based hold-out.
- ``registry``: :class:`~models.registry.Registry` — versions on disk, champion, rollback.
- ``scoring``: :func:`~models.scoring.score_frame` — bundle + rule scores -> risk and decision
  via :mod:`models.risk`.
- ``evaluation``: frame-based metrics, :func:`~models.evaluation.evaluate_featured`, reports.
- ``dataset`` / ``sources``: labelled feature frames; simulated or replayed history.
- ``errors``, ``config`` (registry location), ``metadata``, ``cli``.
"""
