"""The audio data layer: Kaldi data dirs and lhotse manifests in, training windows and
utterances out.

- :mod:`.kaldi`: reading and writing Kaldi data dirs, phone tables, frame labels;
- :mod:`.lhotse_io`: lhotse manifests read as data dirs;
- :mod:`.wav`: reading audio (whole files, spans, segments), resampling;
- :mod:`.index`: the duration index (``utt2num_samples``) built from file headers;
- :mod:`.batches`: window plans (which audio each training batch holds);
- :mod:`.windows`: per-window normalisation;
- :mod:`.loader`: training windows read from disk in DataLoader workers;
- :mod:`.split`: Kaldi-style ``splitN`` of a data dir for parallel jobs.
"""
