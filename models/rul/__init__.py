"""Remaining useful life: ``RulEstimator`` (training, Keras) and its edge runtime.

``models.rul.estimator`` trains and exports; ``models.rul.runtime`` runs an exported bundle with
ONNX Runtime only; ``models.rul.data`` reads C-MAPSS files and holds the RUL metrics;
``models.rul.cmapss`` is the public benchmark behind ``python -m models.evaluate cmapss``.
Submodules are imported on demand so that the runtime does not pull TensorFlow or scikit-learn.
"""
