"""The live step: one LSTM step plus the softmax Dense, in numpy, holding the state (a, c).

This is the notebook's `LSTM_cell` and `densor` stepped by hand, one note at
a time, so that tempo, seed, sampler and live input can change between any
two notes. It needs no TensorFlow: the arrays come from the model bundle in
Keras's layout (kernel columns in gate order i, f, c, o; sigmoid recurrent
activation, tanh activation).
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class LstmWeights:
    """The arrays of one LSTM cell and its softmax Dense, shapes as Keras stores them."""

    kernel: np.ndarray  # (vocabulary, 4 * n_a)
    recurrent_kernel: np.ndarray  # (n_a, 4 * n_a)
    bias: np.ndarray  # (4 * n_a,)
    dense_kernel: np.ndarray  # (n_a, vocabulary)
    dense_bias: np.ndarray  # (vocabulary,)

    @property
    def n_a(self) -> int:
        return self.recurrent_kernel.shape[0]

    @property
    def vocabulary_size(self) -> int:
        return self.dense_bias.shape[0]


@dataclass
class LstmState:
    """A copy of the stepper's state: hidden state a, cell state c."""

    a: np.ndarray
    c: np.ndarray


class Stepper:
    """Step the LSTM one token at a time and return the next token's probabilities.

    `step(None)` feeds the zero input, as the notebook's x0 = 0. The state
    starts at zero (a0 = c0 = 0) and `reset` returns to it.
    """

    def __init__(self, weights: LstmWeights):
        n_a = weights.n_a
        self.n_a = n_a
        self.vocabulary_size = weights.vocabulary_size

        # Keras orders the gate columns i, f, c, o. Reordered to i, f, o, c, the three
        # sigmoid gates sit side by side, and sigmoid(x) = 0.5 + 0.5 * tanh(x / 2), so
        # halving their columns lets one tanh over all four gates replace three sigmoids.
        order = np.concatenate([np.arange(0, 2 * n_a), np.arange(3 * n_a, 4 * n_a), np.arange(2 * n_a, 3 * n_a)])
        gate_scale = np.ones(4 * n_a, dtype=np.float32)
        gate_scale[:3 * n_a] = 0.5
        kernel = weights.kernel.astype(np.float32)[:, order] * gate_scale
        bias = weights.bias.astype(np.float32)[order] * gate_scale

        # One-hot input times the kernel is one kernel row: precompute row + bias per token.
        self._input_rows = kernel + bias
        self._zero_input_row = bias
        self._recurrent = weights.recurrent_kernel.astype(np.float32)[:, order] * gate_scale
        self._dense_kernel = weights.dense_kernel.astype(np.float32)
        self._dense_bias = weights.dense_bias.astype(np.float32)

        self.a = np.zeros(n_a, dtype=np.float32)
        self.c = np.zeros(n_a, dtype=np.float32)

    def reset(self) -> None:
        """Zero the state, as the notebook's a0 = c0 = 0."""
        self.a = np.zeros(self.n_a, dtype=np.float32)
        self.c = np.zeros(self.n_a, dtype=np.float32)

    def snapshot(self) -> LstmState:
        return LstmState(self.a.copy(), self.c.copy())

    def restore(self, state: LstmState) -> None:
        self.a = state.a.copy()
        self.c = state.c.copy()

    def advance(self, token: int | None) -> None:
        """Feed one token (an index, or None for the zero input) into the state."""
        n_a = self.n_a
        row = self._zero_input_row if token is None else self._input_rows[token]
        gates = np.tanh(row + self.a @ self._recurrent)

        sigmoid_gates = gates[:3 * n_a]
        sigmoid_gates *= 0.5
        sigmoid_gates += 0.5
        input_gate = sigmoid_gates[:n_a]
        forget_gate = sigmoid_gates[n_a:2 * n_a]
        output_gate = sigmoid_gates[2 * n_a:]
        candidate = gates[3 * n_a:]

        self.c = forget_gate * self.c + input_gate * candidate
        self.a = output_gate * np.tanh(self.c)

    def probabilities(self) -> np.ndarray:
        """Softmax of the Dense layer over the current hidden state a."""
        logits = self.a @ self._dense_kernel + self._dense_bias
        logits -= logits.max()
        exp = np.exp(logits)
        return exp / exp.sum()

    def step(self, token: int | None) -> np.ndarray:
        """Feed `token` and return the probabilities of the next token."""
        self.advance(token)
        return self.probabilities()
