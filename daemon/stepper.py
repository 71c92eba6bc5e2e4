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

        # One-hot input times the kernel is one kernel row, so the input's
        # share of the gates is a row of `_input_rows`. The LSTM bias is added
        # with the recurrent product instead (next paragraph).
        # A list of row views, because indexing a list costs less than indexing the array.
        self._input_rows = list(kernel)
        vocabulary_size = self.vocabulary_size

        # One matrix-vector product per step computes both the logits of the
        # Dense layer and the recurrent share of the next step's gates, because
        # both multiply the same hidden state a: [a, 1] @ [[dense, recurrent],
        # [dense bias, LSTM bias]]. The constant 1 stored after a brings in the
        # biases. `advance` reuses the gates computed by `probabilities` (or
        # `weights`) and computes the product itself only when the state
        # changed since, so every path does the same arithmetic and a rollback
        # replays a draw bit for bit.
        recurrent = weights.recurrent_kernel.astype(np.float32)[:, order] * gate_scale
        self._joint = np.ascontiguousarray(np.vstack([
            np.hstack([weights.dense_kernel.astype(np.float32), recurrent]),
            np.hstack([weights.dense_bias.astype(np.float32), bias])[np.newaxis, :],
        ]))
        self._a_and_one = np.zeros(n_a + 1, dtype=np.float32)
        self._a_and_one[n_a] = 1.0
        self.a = self._a_and_one[:n_a]

        # One buffer [logits, o, i, f, candidate, c]: the product writes the
        # logits and the gates, and the cell state follows the candidate so
        # that [i, f] * [candidate, c] is one multiply.
        self._work = np.zeros(vocabulary_size + 5 * n_a, dtype=np.float32)
        self._product = self._work[:vocabulary_size + 4 * n_a]
        self._logits = self._work[:vocabulary_size]
        gates_and_cell = self._work[vocabulary_size:]
        self._gates = gates_and_cell[:4 * n_a]
        self._sigmoid_gates = gates_and_cell[:3 * n_a]
        self._output_gate = gates_and_cell[:n_a]
        self._input_and_forget = gates_and_cell[n_a:3 * n_a]
        self._candidate_and_cell = gates_and_cell[3 * n_a:]
        self.c = gates_and_cell[4 * n_a:]
        self._products = np.empty(2 * n_a, dtype=np.float32)
        # Constants as 0-d float32 arrays: numpy converts a Python float
        # operand on every call, which cost about 0.9 us on the benchmark machine.
        self._half = np.array(0.5, dtype=np.float32)
        self._tanh_c = np.empty(n_a, dtype=np.float32)
        # Whether `_gates` contains [a, 1] @ the recurrent columns for the current a.
        self._gates_ready = False

        self._ones = np.ones(vocabulary_size, dtype=np.float32)
        # |a| < 1 elementwise, so no logit exceeds the column's absolute sum
        # plus its bias in magnitude: below the limit, exp cannot overflow or
        # underflow to an all-zero sum, and the largest logit need not be subtracted.
        dense = self._joint[:, :vocabulary_size]
        self._logit_bound = float(np.abs(dense).sum(axis=0).max())

    def reset(self) -> None:
        """Zero the state, as the notebook's a0 = c0 = 0."""
        self.a.fill(0.0)
        self.c.fill(0.0)
        self._gates_ready = False

    def snapshot(self) -> LstmState:
        return LstmState(self.a.copy(), self.c.copy())

    def restore(self, state: LstmState) -> None:
        self.a[...] = state.a
        self.c[...] = state.c
        self._gates_ready = False

    def advance(self, token: int | None) -> None:
        """Feed one token (an index, or None for the zero input) into the state."""
        n_a = self.n_a
        gates = self._gates
        if not self._gates_ready:
            np.dot(self._a_and_one, self._joint, out=self._product)
        if token is not None:
            np.add(gates, self._input_rows[token], out=gates)
        np.tanh(gates, out=gates)

        sigmoid_gates = self._sigmoid_gates
        half = self._half
        np.multiply(sigmoid_gates, half, out=sigmoid_gates)
        np.add(sigmoid_gates, half, out=sigmoid_gates)

        # c = f * c + i * candidate, from the products [i * candidate, f * c].
        products = self._products
        np.multiply(self._input_and_forget, self._candidate_and_cell, out=products)
        np.add(products[:n_a], products[n_a:], out=self.c)

        # a = o * tanh(c)
        np.tanh(self.c, out=self._tanh_c)
        np.multiply(self._output_gate, self._tanh_c, out=self.a)
        self._gates_ready = False

    def logits(self) -> np.ndarray:
        """Return the Dense layer's logits over the current hidden state, as a view into the stepper's buffer (read it, do not keep it)."""
        np.dot(self._a_and_one, self._joint, out=self._product)
        self._gates_ready = True
        return self._logits

    def weights(self, scale: float = 1.0) -> np.ndarray:
        """Return exp(scale * logits) over the current hidden state: the next token's probabilities times an unknown positive factor.

        `scale` is 1 / temperature. The result is a view into the stepper's
        buffer, valid until the next call of any method: read it, do not keep it.
        It skips the softmax's normalisation, for choosers that do not need it.
        """
        logits = self.logits()
        if scale != 1.0:
            np.multiply(logits, scale, out=logits)
        if not self._logit_bound * scale <= UNSHIFTED_LOGIT_LIMIT:
            np.subtract(logits, logits.max(), out=logits)
        np.exp(logits, out=logits)
        return logits

    def probabilities(self) -> np.ndarray:
        """Return the softmax of the Dense layer over the current hidden state a, as a new array."""
        weights = self.weights()
        return np.divide(weights, np.dot(weights, self._ones))

    def step(self, token: int | None) -> np.ndarray:
        """Feed `token` and return the probabilities of the next token."""
        self.advance(token)
        return self.probabilities()
