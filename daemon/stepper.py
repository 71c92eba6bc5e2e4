"""The live step: one LSTM step plus the softmax Dense, in numpy, holding the state (a, c).

This is the notebook's `LSTM_cell` and `densor` stepped by hand, one note at
a time, so that tempo, seed, sampler and live input can change between any
two notes. It needs no TensorFlow: the arrays come from the model bundle in
Keras's layout (kernel columns in gate order i, f, c, o; sigmoid recurrent
activation, tanh activation).

Speed. A step is a dozen numpy calls on vectors of at most a few hundred
floats, so the fixed cost of each call (about 1 us) matters as much as the
arithmetic. The step therefore works in float32 buffers allocated once,
writes every result with `out=`, and uses no call that a rearrangement of
the weights can replace.
"""

from dataclasses import dataclass

import numpy as np

# exp(x) fits float32 for x < 88, and a sum of a few thousand such terms too
# when x <= 64. When no logit can exceed this bound (see `Stepper.__init__`),
# the softmax skips the usual subtraction of the largest logit.
UNSHIFTED_LOGIT_LIMIT = 64.0


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
    starts at zero (a0 = c0 = 0) and `reset` returns to it. `a` and `c` are
    views into the stepper's buffers, updated in place: copy them (or use
    `snapshot`) to keep a state.
    """

    def __init__(self, weights: LstmWeights):
        n_a = weights.n_a
        self.n_a = n_a
        self.vocabulary_size = weights.vocabulary_size

        # Keras orders the gate columns i, f, c, o. Here they are reordered to
        # o, i, f, c: the three sigmoid gates sit side by side, and because
        # sigmoid(x) = 0.5 + 0.5 * tanh(x / 2), halving their columns lets one
        # tanh over all four gates replace three sigmoids.
        order = np.concatenate([np.arange(3 * n_a, 4 * n_a), np.arange(0, 2 * n_a), np.arange(2 * n_a, 3 * n_a)])
        gate_scale = np.ones(4 * n_a, dtype=np.float32)
        gate_scale[:3 * n_a] = 0.5
        kernel = weights.kernel.astype(np.float32)[:, order] * gate_scale
        bias = weights.bias.astype(np.float32)[order] * gate_scale

        # One-hot input times the kernel is one kernel row: precompute row + bias per token.
        self._input_rows = kernel + bias
        self._zero_input_row = bias
        self._recurrent = np.ascontiguousarray(weights.recurrent_kernel.astype(np.float32)[:, order] * gate_scale)

        # The Dense bias is one more kernel row, multiplied by a constant 1
        # stored after a, so one matrix-vector product computes the logits.
        self._dense = np.vstack([weights.dense_kernel, weights.dense_bias[np.newaxis, :]]).astype(np.float32)
        self._a_and_one = np.zeros(n_a + 1, dtype=np.float32)
        self._a_and_one[n_a] = 1.0
        self.a = self._a_and_one[:n_a]

        # Work buffer [o, i, f, candidate, c]: the gates as the matrix product
        # writes them, then the cell state, so that [i, f] * [candidate, c] is one multiply.
        self._work = np.zeros(5 * n_a, dtype=np.float32)
        self._gates = self._work[:4 * n_a]
        self._sigmoid_gates = self._work[:3 * n_a]
        self._output_gate = self._work[:n_a]
        self._input_and_forget = self._work[n_a:3 * n_a]
        self._candidate_and_cell = self._work[3 * n_a:]
        self.c = self._work[4 * n_a:]
        self._products = np.empty(2 * n_a, dtype=np.float32)
        self._tanh_c = np.empty(n_a, dtype=np.float32)

        self._exp = np.empty(self.vocabulary_size, dtype=np.float32)
        self._ones = np.ones(self.vocabulary_size, dtype=np.float32)
        # |a| < 1 elementwise, so no logit exceeds the column's absolute sum
        # plus its bias in magnitude: below the limit, exp cannot overflow or
        # underflow to an all-zero sum, and the largest logit need not be subtracted.
        logit_bound = float(np.abs(self._dense).sum(axis=0).max())
        self._shift_logits = not logit_bound <= UNSHIFTED_LOGIT_LIMIT

    def reset(self) -> None:
        """Zero the state, as the notebook's a0 = c0 = 0."""
        self.a.fill(0.0)
        self.c.fill(0.0)

    def snapshot(self) -> LstmState:
        return LstmState(self.a.copy(), self.c.copy())

    def restore(self, state: LstmState) -> None:
        self.a[...] = state.a
        self.c[...] = state.c

    def advance(self, token: int | None) -> None:
        """Feed one token (an index, or None for the zero input) into the state."""
        n_a = self.n_a
        row = self._zero_input_row if token is None else self._input_rows[token]
        gates = self._gates
        np.dot(self.a, self._recurrent, out=gates)
        np.add(gates, row, out=gates)
        np.tanh(gates, out=gates)

        sigmoid_gates = self._sigmoid_gates
        np.multiply(sigmoid_gates, 0.5, out=sigmoid_gates)
        np.add(sigmoid_gates, 0.5, out=sigmoid_gates)

        # c = f * c + i * candidate, from the products [i * candidate, f * c].
        products = self._products
        np.multiply(self._input_and_forget, self._candidate_and_cell, out=products)
        np.add(products[:n_a], products[n_a:], out=self.c)

        # a = o * tanh(c)
        np.tanh(self.c, out=self._tanh_c)
        np.multiply(self._output_gate, self._tanh_c, out=self.a)

    def probabilities(self) -> np.ndarray:
        """Return the softmax of the Dense layer over the current hidden state a, as a new array."""
        exp = self._exp
        np.dot(self._a_and_one, self._dense, out=exp)
        if self._shift_logits:
            np.subtract(exp, exp.max(), out=exp)
        np.exp(exp, out=exp)
        return np.divide(exp, np.dot(exp, self._ones))

    def step(self, token: int | None) -> np.ndarray:
        """Feed `token` and return the probabilities of the next token."""
        self.advance(token)
        return self.probabilities()
