"""What tests share besides fixtures (those are in ``conftest.py``): fake MNIST files
(:mod:`helpers.idx`), a tiny preprocessed split and the real mirror (:mod:`helpers.data`), clones
of the project and commands run in them (:mod:`helpers.project`), and a real MLflow tracking
server (:mod:`helpers.mlflow_server`)."""
