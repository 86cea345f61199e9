"""The notebook API: federations and scikit-learn-shaped estimators over the CLI's engine.

* :mod:`~fedrisk.estimators.federation` — :class:`Federation`: parties' tables and roles;
* :mod:`~fedrisk.estimators.engine` — runs a task's own ``run(ctx)`` per participant in-process;
* :mod:`~fedrisk.estimators.base` — hyper-parameters built from the task ``Params`` declarations;
* :mod:`~fedrisk.estimators.linear`, :mod:`~fedrisk.estimators.boosting`,
  :mod:`~fedrisk.estimators.woe`, :mod:`~fedrisk.estimators.scorecard` — the estimators;
* :mod:`~fedrisk.estimators.results` — ``load`` (model files) and ``run`` (a job spec).

Import the public names from :mod:`fedrisk` (``fr.Federation``, ``fr.SecureBoost`` ...).
"""
