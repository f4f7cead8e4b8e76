"""``cpc-seq mi bench``: MI estimators of the loss core checked against known MI.

:mod:`~cpc_seq.mibench.tasks` (correlated Gaussians and MI-preserving transforms of them,
MI in closed form), :mod:`~cpc_seq.mibench.critics` (small separable/concat MLP critics),
:mod:`~cpc_seq.mibench.run` (train one critic per estimator x task, estimate, table + PNG),
:mod:`~cpc_seq.mibench.cli` (the command).
"""
