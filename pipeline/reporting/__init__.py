"""What the pipeline reports: plots, the test-set evaluation, the NumPy-vs-TensorFlow comparison,
and the summary of a sweep."""
