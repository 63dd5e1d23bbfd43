"""The benchmark's three training configurations, and the arithmetic of their matrix products.

Every implementation trains each configuration identically: the same layer sizes and activations,
a softmax output with cross-entropy (mean over the batch), plain SGD (no momentum, no weight decay)
at the same constant learning rate, the same batch size and number of epochs, float32, the same
initial weights, reshuffled every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise


@dataclass(frozen=True)
class BenchConfig:
    """One training configuration. ``layer_sizes`` input first; one activation per layer."""

    name: str
    title: str
    layer_sizes: tuple[int, ...]
    activations: tuple[str, ...]
    learning_rate: float
    batch_size: int
    epochs: int
    init: str = "xavier_normal"

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def description(self) -> str:
        """``reference: 784-32-16-10 tanh, SGD 0.1, batch 32, 5 epochs``."""
        sizes = "-".join(map(str, self.layer_sizes))
        epochs = f"{self.epochs} epoch" + ("s" if self.epochs != 1 else "")
        return (
            f"{self.title}: {sizes} {self.hidden_activation}, SGD {self.learning_rate:g}, "
            f"batch {self.batch_size}, {epochs}"
        )

    @property
    def hidden_activation(self) -> str:
        return self.activations[0]


CONFIGS: dict[str, BenchConfig] = {
    "a": BenchConfig(
        name="a",
        title="reference",
        layer_sizes=(784, 32, 16, 10),
        activations=("tanh", "tanh", "softmax"),
        learning_rate=0.1,
        batch_size=32,
        epochs=5,
    ),
    "b": BenchConfig(
        name="b",
        title="mid-size",
        layer_sizes=(784, 256, 128, 10),
        activations=("relu", "relu", "softmax"),
        learning_rate=0.1,
        batch_size=128,
        epochs=3,
        init="he_normal",
    ),
    "c": BenchConfig(
        name="c",
        title="compute-bound",
        layer_sizes=(784, 1024, 1024, 10),
        activations=("relu", "relu", "softmax"),
        learning_rate=0.05,
        batch_size=256,
        epochs=2,
        init="he_normal",
    ),
}


def flops_per_example(layer_sizes: Sequence[int]) -> int:
    """Floating-point operations of the matrix products of one training example.

    For layers ``n_0, ..., n_L`` a product ``(m, k) @ (k, n)`` costs ``2 m k n``. Per example and
    layer ``l``: the forward ``A^{l-1} @ W^l`` and the weight gradient ``A^{l-1}.T @ Delta^l``,
    ``2 n_{l-1} n_l`` each, and the error sent back ``Delta^l @ W^l.T``, also ``2 n_{l-1} n_l``,
    for every layer but the first (nothing needs the input's error). Element-wise work (biases,
    activations, softmax, the update) is left out.
    """
    products = [n_in * n_out for n_in, n_out in pairwise(layer_sizes)]
    if not products:
        raise ValueError(f"need at least two layer sizes, got {list(layer_sizes)}")
    forward = 2 * sum(products)
    weight_gradients = 2 * sum(products)
    errors = 2 * sum(products[1:])
    return forward + weight_gradients + errors


def training_flops(layer_sizes: Sequence[int], n_samples: int, epochs: int) -> int:
    """Matrix-product FLOPs of ``epochs`` epochs over ``n_samples`` examples (any batch size:
    the count is linear in the batch, so a partial last batch changes nothing)."""
    return flops_per_example(layer_sizes) * n_samples * epochs
