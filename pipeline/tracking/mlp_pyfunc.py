"""The NumPy MLP as an MLflow pyfunc model: the code MLflow stores with every logged model.

MLflow runs this file when it loads the model ("models from code": nothing is pickled), with the
model's ``code/`` folder on ``sys.path``; that folder holds a copy of the ``mlp`` package, so a
model loads and serves with NumPy and MLflow installed, without this project. It must therefore
import nothing but NumPy, MLflow and ``mlp``. :mod:`pipeline.tracking.models` logs it.

Input: float32 pixels in [0, 1], shape ``(n, 784)``; output: class probabilities ``(n, 10)``,
rows summing to 1 (the model's signature says so, and MLflow checks inputs against it).
"""

import mlflow
import numpy as np
from mlflow.models import set_model

from mlp import MLP

#: The name of the ``.npz`` among the model's artifacts.
WEIGHTS = "weights"


class MLPModel(mlflow.pyfunc.PythonModel):
    """:meth:`mlp.MLP.forward` behind MLflow's ``predict``."""

    def load_context(self, context) -> None:
        self.net = MLP.load(context.artifacts[WEIGHTS])

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        # MLflow has checked the input against the signature: float32 (n, 784).
        return self.net.forward(np.asarray(model_input))


set_model(MLPModel())
