"""The notebook's Keras models, built as the exercise builds them, for reference and tests.

`djmodel` unrolls the shared `LSTM_cell` and `densor` over Tx steps with
teacher forcing; `music_inference_model` unrolls them over Ty steps and
feeds `one_hot(argmax(out))` back as the next input. The daemon's numpy
stepper must reproduce `music_inference_model(...).predict` exactly with
the greedy sampler. Keras 3 needs an explicit `output_shape` on the Lambda.
This module imports TensorFlow.
"""

from .stepper import LstmWeights
from .training import import_tensorflow


def notebook_layers(weights: LstmWeights):
    """Build the shared `LSTM_cell`, `densor` and reshaper layers of the notebook, loaded with `weights`."""
    tf = import_tensorflow()
    keras = tf.keras
    n_a = weights.n_a
    n_values = weights.vocabulary_size

    lstm_cell = keras.layers.LSTM(n_a, return_state=True, name="LSTM_cell")
    densor = keras.layers.Dense(n_values, activation="softmax", name="densor")
    reshaper = keras.layers.Reshape((1, n_values))

    lstm_cell.build((None, 1, n_values))
    densor.build((None, n_a))
    lstm_cell.set_weights([weights.kernel, weights.recurrent_kernel, weights.bias])
    densor.set_weights([weights.dense_kernel, weights.dense_bias])
    return lstm_cell, densor, reshaper


def djmodel(tx: int, lstm_cell, densor, reshaper):
    """Build the notebook's training model: inputs X (m, Tx, n_values), a0 and c0, and Tx softmax outputs."""
    tf = import_tensorflow()
    keras = tf.keras
    n_values = densor.units
    n_a = lstm_cell.units

    inputs = keras.Input(shape=(tx, n_values))
    a0 = keras.Input(shape=(n_a,), name="a0")
    c0 = keras.Input(shape=(n_a,), name="c0")
    a, c = a0, c0

    outputs = []
    for t in range(tx):
        x = keras.layers.Lambda(lambda z, t=t: z[:, t, :], output_shape=(n_values,))(inputs)
        x = reshaper(x)
        a, _, c = lstm_cell(x, initial_state=[a, c])
        outputs.append(densor(a))
    return keras.Model(inputs=[inputs, a0, c0], outputs=outputs)


def music_inference_model(lstm_cell, densor, ty: int = 100):
    """Build the notebook's inference model, which feeds the argmax of each output back as a one-hot input."""
    tf = import_tensorflow()
    keras = tf.keras
    n_values = densor.units
    n_a = lstm_cell.units

    x0 = keras.Input(shape=(1, n_values))
    a0 = keras.Input(shape=(n_a,), name="a0")
    c0 = keras.Input(shape=(n_a,), name="c0")
    a, c, x = a0, c0, x0

    def one_hot(probabilities):
        return keras.ops.expand_dims(keras.ops.one_hot(keras.ops.argmax(probabilities, axis=-1), n_values), 1)

    outputs = []
    for _ in range(ty):
        a, _, c = lstm_cell(x, initial_state=[a, c])
        out = densor(a)
        outputs.append(out)
        x = keras.layers.Lambda(one_hot, output_shape=(1, n_values))(out)
    return keras.Model(inputs=[x0, a0, c0], outputs=outputs)
