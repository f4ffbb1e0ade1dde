"""Pure ML core of the training app: plain torch/torchvision/numpy/PIL, never Django.

Modules are imported explicitly (``from training.ml.pipeline import ...``); this package
file stays empty on purpose so that importing ``training.ml`` (or its light modules:
``config``, ``images``, ``metrics``, ``pipeline``) does not pull in torch. The web process
must be able to read configs, split photos and preprocess images without paying for it.
"""
