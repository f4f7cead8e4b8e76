"""The audio CPC model: :mod:`.cpc` (``ModelConfig``, ``CPCModel``, presets, ``build_model``),
:mod:`.encoder` (the strided conv encoder), :mod:`.augment` (waveform augmentation),
:mod:`.mfcc` (the MFCC baseline features), :mod:`.import_cpc_audio` (published CPC_audio
checkpoints as cpc_seq models). Plain torch; CPU speed kernels are :mod:`cpc_seq.kernels`.
"""
