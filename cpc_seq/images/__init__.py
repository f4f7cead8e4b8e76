"""DIM and AMDIM on images, on the shared loss core (:mod:`cpc_seq.losses`).

- :mod:`cpc_seq.images.data`: Fashion-MNIST (IDX), CIFAR-10, STL-10 readers.
- :mod:`cpc_seq.images.dim`: Deep InfoMax (global, local, adversarial prior).
- :mod:`cpc_seq.images.amdim`: AMDIM encoder, multiscale NCE, two-view augmentation.
- :mod:`cpc_seq.images.train`: configs and the training loop.
- :mod:`cpc_seq.images.evaluate`: linear probes vs raw pixels and random init.
- :mod:`cpc_seq.images.cli`: the ``image-train`` / ``image-probe`` commands.
"""
