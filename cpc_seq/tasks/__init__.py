"""Training tasks shared by modalities, on top of the engine: :mod:`~cpc_seq.tasks.kstep`
(k-step CPC, used by the audio and text tasks)."""
