"""The training engine every modality runs on.

- :mod:`~cpc_seq.engine.trainer`: :class:`Engine` (the loop, checkpoints, resume, DDP,
  logging) and :class:`Task` (what a modality provides).
- :mod:`~cpc_seq.engine.config`: the shared ``optim`` and ``train`` config sections.
- :mod:`~cpc_seq.engine.device`, :mod:`~cpc_seq.engine.schedule`,
  :mod:`~cpc_seq.engine.guard`, :mod:`~cpc_seq.engine.log`,
  :mod:`~cpc_seq.engine.distributed`, :mod:`~cpc_seq.engine.windows` (resumable batch
  sources).
"""
