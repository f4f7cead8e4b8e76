"""Audio CPC: waveform encoder, Kaldi data dirs, training task, extraction, commands."""
