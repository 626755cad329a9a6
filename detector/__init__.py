"""The detector runtime: what turns a signed model bundle into decisions, with numpy and ONNX
Runtime only.

The edge scores live readings with it (``edge.onnx_detector`` adapts readings to rows), the
cloud trainer validates candidates with it (``cloud.lifecycle.trainer``), and the training side
(``models``) computes its scores and thresholds with the same strategy and smoothing functions,
so the decision measured during evaluation is by construction the one taken on the rig.

- ``detector.strategies``: how component scores become one decision, and sensor shares;
- ``detector.features``: sensor selection, windows and the trailing smoothing of scores;
- ``detector.bundle``: ``BundleScorer``, a verified bundle run with ONNX Runtime.
- ``detector.checks``: per-sensor fault checks beside the models, ``detector.stuck`` (stuck /
  flatline sensors) and ``detector.drift`` (slow drift), their limits learned at fit time and
  carried in the manifest's ``fault_checks``.
- ``detector.rul``: remaining useful life, a verified RUL bundle (``RulBundle``) and the
  per-machine ``RulTracker`` the edge runs beside the detector.

Import direction (enforced by import-linter, see ``[tool.importlinter]`` in pyproject.toml):
this package imports only ``shared`` and never TensorFlow, scikit-learn or the ``onnx``
package, because the edge installs without them.
"""
