"""Training one configuration: build it (:mod:`~pipeline.training.build`), train it with a
framework (:mod:`~pipeline.training.frameworks`: the NumPy MLP, or Keras for the baseline), and
save and record it (:mod:`~pipeline.training.run`, the one run path of every entry point)."""
