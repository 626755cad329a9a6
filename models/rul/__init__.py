"""Remaining useful life: ``RulEstimator`` (training, Keras) and its edge runtime.

``models.rul.estimator`` trains and exports; ``detector.rul`` runs an exported bundle with ONNX
Runtime only (the edge's runtime; ``models.rul.runtime`` re-exports it); ``models.rul.sim`` is
the rig's model, trained and judged on simulated run-to-failure fleets (``rul-sim``);
``models.rul.data`` reads C-MAPSS files and holds the RUL metrics; ``models.rul.cmapss`` is the
public benchmark behind ``python -m models.evaluate cmapss``. Submodules are imported on demand
so that the runtime does not pull TensorFlow or scikit-learn.
"""
