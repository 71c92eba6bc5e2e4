"""Step latency: from the state and the previous token to the chosen next token, per note.

sideman's live step (Improviser.draw: the numpy stepper and the default
sampler chain) is compared with the same weights run the notebook's ways in
TensorFlow: the Keras layers called eagerly, a tf.function step, per-note
`model.predict` on a one-step model, and the unrolled
`music_inference_model(Ty).predict` divided by Ty. Every variant except the
unrolled model chooses its token with the same sampler chain. The unrolled
model takes the argmax inside the graph, as the notebook does.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bench.report import Row, Section, latency_row, write_quantiles_csv
from sideman.bundle import Bundle, load_bundle
from sideman.config.loader import load_settings
from sideman.encoding import EncodingSettings, Token
from sideman.errors import BundleError
from sideman.improviser import Improviser
from sideman.registry import load_samplers
from sideman.sampling import SamplerChain, SamplerContext, build_chain
from sideman.stepper import LstmWeights
from sideman.vocabulary import Vocabulary

log = logging.getLogger(__name__)

LIVE_STEP_TARGET_US = 50.0
PREDICT_RATIO_TARGET = 500.0
TF_FUNCTION_RATIO_TARGET = 5.0
STATE_SIZES = (64, 128, 256)
VOCABULARY_SIZE = 768
# The numpy calls one live step makes with the temperature chooser at its
# default value 1: 8 in Stepper.advance, 1 in Stepper.logits (the product of
# [a, 1] with the joint matrix) and 2 in Temperature.choose_logits (adding the
# Gumbel noise, argmax). The floor row times as many calls that do no work,
# which is what the interpreter alone costs.
LIVE_STEP_NUMPY_CALLS = 11
PREPARE_ROW = "noise drawn ahead (Improviser.prepare, between steps)"


@dataclass(frozen=True)
class StepCounts:
    """How many calls each variant is timed for, after `warmup` untimed ones."""

    steps: int = 10_000
    # An eager step takes milliseconds: 2,000 of them give a stable p99 in a
    # few minutes, where 10,000 would take most of the full run's budget.
    eager_steps: int = 2_000
    predict_calls: int = 1_000
    unrolled_calls: int = 20
    unrolled_ty: int = 100
    warmup: int = 1_000

    @classmethod
    def quick(cls) -> "StepCounts":
        return cls(steps=2_000, eager_steps=100, predict_calls=20, unrolled_calls=2, unrolled_ty=100, warmup=200)


def default_chain() -> SamplerChain:
    """Return the sampler chain that `sideman run` uses without options (default.toml)."""
    samplers = load_samplers()
    settings = load_settings(None, None, samplers)
    return build_chain(settings.run.sampler, samplers, settings.plugins)


def time_calls(call: Callable[[], object], count: int, warmup: int) -> np.ndarray:
    """Call `call` warmup times untimed, then `count` times; return each timed call's nanoseconds."""
    for _ in range(warmup):
        call()

    samples = np.empty(count, dtype=np.int64)
    clock = time.perf_counter_ns
    for index in range(count):
        started = clock()
        call()
        samples[index] = clock() - started
    return samples


def time_live_steps(improviser: Improviser, count: int, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """Time `count` draws and the `prepare` call after each, as the engine makes them, and return both in nanoseconds.

    The engine calls Improviser.prepare while it waits for its next event,
    so the draw's latency does not contain it. Its time is returned apart,
    so that the table shows what drawing the noise ahead costs per note.
    """
    draw, prepare = improviser.draw, improviser.prepare
    for _ in range(warmup):
        draw()
        prepare()

    draws = np.empty(count, dtype=np.int64)
    prepares = np.empty(count, dtype=np.int64)
    clock = time.perf_counter_ns
    for index in range(count):
        started = clock()
        draw()
        drawn = clock()
        prepare()
        draws[index] = drawn - started
        prepares[index] = clock() - drawn
    return draws, prepares


def microseconds(samples_ns: np.ndarray) -> np.ndarray:
    return samples_ns / 1000.0


def synthetic_vocabulary(size: int = VOCABULARY_SIZE) -> Vocabulary:
    """Return `size` note tokens: 64 pitches from E2 up, each in twelve durations of 1 to 12 grid steps."""
    durations = 12
    pitches = -(-size // durations)
    tokens = [Token(40 + pitch, steps) for pitch in range(pitches) for steps in range(1, durations + 1)]
    return Vocabulary(tokens[:size])


def random_weights(n_a: int, vocabulary_size: int, seed: int = 0) -> LstmWeights:
    """Return random float32 weights at about the scales of Keras's initializers.

    The kernels are Glorot uniform, as Keras's; the recurrent kernel is
    normal with variance 1 / n_a, about the scale of Keras's orthogonal one.
    """
    rng = np.random.default_rng(seed)

    def glorot(rows: int, columns: int) -> np.ndarray:
        limit = np.sqrt(6.0 / (rows + columns))
        return rng.uniform(-limit, limit, size=(rows, columns)).astype(np.float32)

    return LstmWeights(
        kernel=glorot(vocabulary_size, 4 * n_a),
        recurrent_kernel=(rng.normal(size=(n_a, 4 * n_a)) / np.sqrt(n_a)).astype(np.float32),
        bias=np.zeros(4 * n_a, dtype=np.float32),
        dense_kernel=glorot(n_a, vocabulary_size),
        dense_bias=np.zeros(vocabulary_size, dtype=np.float32),
    )


def random_bundle(n_a: int, vocabulary: Vocabulary, seed: int = 0) -> Bundle:
    weights = random_weights(n_a, len(vocabulary), seed)
    return Bundle(weights, vocabulary, EncodingSettings(), tx=30, metadata={"name": f"random weights, n_a = {n_a}"})


def benchmark_model(model: str | None) -> tuple[Bundle, str]:
    """Load the model to measure, or random weights of the built-in model's shape when it is missing."""
    try:
        bundle = load_bundle(model)
        return bundle, f"{bundle.metadata.get('name') or bundle.path} (n_a = {bundle.n_a}, {len(bundle.vocabulary)} tokens)"
    except BundleError as error:
        log.warning("cannot load the model (%s): measuring random weights of n_a = 64 and %d tokens instead", error, VOCABULARY_SIZE)
        return random_bundle(64, synthetic_vocabulary()), f"random weights (n_a = 64, {VOCABULARY_SIZE} tokens), because the model did not load"


def interpreter_floor() -> Callable[[], None]:
    """Return LIVE_STEP_NUMPY_CALLS numpy calls that do almost no work (adding four floats)."""
    operand = np.zeros(4, dtype=np.float32)
    result = np.empty(4, dtype=np.float32)
    add = np.add
    calls = range(LIVE_STEP_NUMPY_CALLS)

    def call() -> None:
        for _ in calls:
            add(operand, operand, out=result)

    return call


def time_live_step_parts(bundle: Bundle, chain: SamplerChain, counts: StepCounts) -> dict[str, np.ndarray]:
    """Time the three parts of a live step separately, in nanoseconds: LSTM step, Dense layer, sampler chain.

    The loop repeats what Improviser.draw does, with a clock read between the
    parts, and prepares the noise untimed after each step as the engine does.
    """
    improviser = Improviser(bundle, chain, seed=0)
    stepper, context = improviser.stepper, improviser.context
    from_logits = chain.chooser.takes_logits and not chain.filters
    clock = time.perf_counter_ns
    parts = np.empty((counts.warmup + counts.steps, 3), dtype=np.int64)
    token = None
    for index in range(len(parts)):
        started = clock()
        stepper.advance(token)
        advanced = clock()
        if from_logits:
            logits = stepper.logits()
            densed = clock()
            token = chain.chooser.choose_logits(logits, context)
        else:
            probabilities = stepper.probabilities()
            densed = clock()
            token = chain.choose(probabilities, context)
        chosen = clock()
        context.recent.append(token)
        improviser.prepare()
        parts[index] = (advanced - started, densed - advanced, chosen - densed)

    timed = parts[counts.warmup:]
    dense_part = "Stepper.logits (Dense and next gates)" if from_logits else "Stepper.probabilities (Dense, next gates, softmax)"
    return {
        "part: Stepper.advance (LSTM step)": timed[:, 0],
        f"part: {dense_part}": timed[:, 1],
        "part: sampler chain": timed[:, 2],
    }


def measure_live_steps(bundle: Bundle, chain_factory: Callable[[], SamplerChain], counts: StepCounts) -> dict[str, np.ndarray]:
    """Time the live step with `bundle`, its parts and its noise, with random weights of every size in STATE_SIZES, and the interpreter floor."""
    draws, prepares = time_live_steps(Improviser(bundle, chain_factory(), seed=0), counts.steps, counts.warmup)
    samples = {"live step": draws, PREPARE_ROW: prepares}
    samples.update(time_live_step_parts(bundle, chain_factory(), counts))
    for n_a in STATE_SIZES:
        random_model = random_bundle(n_a, bundle.vocabulary, seed=n_a)
        draws, _ = time_live_steps(Improviser(random_model, chain_factory(), seed=0), counts.steps, counts.warmup)
        samples[f"live step, random n_a = {n_a}"] = draws
    samples["floor"] = time_calls(interpreter_floor(), counts.steps, counts.warmup)
    return samples


class TensorflowSteps:
    """The notebook's layers loaded with the bundle's weights, stepped in TensorFlow's ways."""

    def __init__(self, bundle: Bundle, chain: SamplerChain, seed: int = 0):
        from sideman.reference import notebook_layers
        from sideman.training import import_tensorflow

        self.tf = import_tensorflow()
        self.n_a = bundle.n_a
        self.size = len(bundle.vocabulary)
        self.lstm_cell, self.densor, _ = notebook_layers(bundle.weights)
        self.chain = chain
        self.context = SamplerContext(bundle.vocabulary, np.random.default_rng(seed))
        # Row k is the one-hot input of token k, shaped (1, 1, vocabulary) as the notebook's x.
        self.one_hot = np.eye(self.size, dtype=np.float32)[:, np.newaxis, np.newaxis, :]
        self.zero_input = np.zeros((1, 1, self.size), dtype=np.float32)

    def _input(self, token: int | None) -> np.ndarray:
        return self.zero_input if token is None else self.one_hot[token]

    def _zero_state(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((1, self.n_a), dtype=np.float32), np.zeros((1, self.n_a), dtype=np.float32)

    def eager_step(self) -> Callable[[], int]:
        """Return a step that calls the Keras layers eagerly, as `LSTM_cell(x, initial_state=[a, c])` then `densor(a)`."""
        a, c = self._zero_state()
        token = None

        def step() -> int:
            nonlocal a, c, token
            a, _, c = self.lstm_cell(self._input(token), initial_state=[a, c])
            probabilities = self.densor(a).numpy()[0]
            token = self.chain.choose(probabilities, self.context)
            return token

        return step

    def compiled_step(self) -> Callable[[], int]:
        """Return a step through one tf.function holding the LSTM cell and the Dense layer."""
        tf = self.tf
        signature = [
            tf.TensorSpec((1, 1, self.size), tf.float32),
            tf.TensorSpec((1, self.n_a), tf.float32),
            tf.TensorSpec((1, self.n_a), tf.float32),
        ]

        lstm_cell, densor = self.lstm_cell, self.densor

        # The step has no Python control flow, so AutoGraph has nothing to convert.
        @tf.function(input_signature=signature, autograph=False)
        def compiled(x, a, c):
            a, _, c = lstm_cell(x, initial_state=[a, c])
            return densor(a), a, c

        a, c = self._zero_state()
        token = None

        def step() -> int:
            nonlocal a, c, token
            probabilities, a, c = compiled(self._input(token), a, c)
            token = self.chain.choose(probabilities.numpy()[0], self.context)
            return token

        return step

    def predict_step(self) -> Callable[[], int]:
        """Return a step that calls `model.predict` on a one-step Keras model, the notebook's way for one note."""
        keras = self.tf.keras
        x = keras.Input(shape=(1, self.size))
        a0 = keras.Input(shape=(self.n_a,))
        c0 = keras.Input(shape=(self.n_a,))
        a1, _, c1 = self.lstm_cell(x, initial_state=[a0, c0])
        model = keras.Model([x, a0, c0], [self.densor(a1), a1, c1])

        a, c = self._zero_state()
        token = None

        def step() -> int:
            nonlocal a, c, token
            probabilities, a, c = model.predict([self._input(token), a, c], verbose=0)
            token = self.chain.choose(probabilities[0], self.context)
            return token

        return step

    def unrolled_predict(self, ty: int) -> Callable[[], object]:
        """Return one call of the notebook's `music_inference_model(Ty).predict` from x0 = a0 = c0 = 0."""
        from sideman.reference import music_inference_model

        model = music_inference_model(self.lstm_cell, self.densor, ty)
        a0, c0 = self._zero_state()
        inputs = [self.zero_input, a0, c0]
        return lambda: model.predict(inputs, verbose=0)


def measure_tensorflow_steps(bundle: Bundle, chain: SamplerChain, counts: StepCounts) -> dict[str, np.ndarray]:
    """Time every TensorFlow variant; the unrolled model's samples are per note (call time / Ty)."""
    steps = TensorflowSteps(bundle, chain)
    warmup = max(3, counts.warmup // 10)
    samples = {
        "Keras layers, eager": time_calls(steps.eager_step(), counts.eager_steps, warmup),
        "tf.function step": time_calls(steps.compiled_step(), counts.steps, warmup),
        "model.predict per note": time_calls(steps.predict_step(), counts.predict_calls, warmup),
    }
    unrolled = time_calls(steps.unrolled_predict(counts.unrolled_ty), counts.unrolled_calls, 2)
    samples[f"music_inference_model(Ty={counts.unrolled_ty}).predict / {counts.unrolled_ty}"] = unrolled / counts.unrolled_ty
    return samples


def run_step_benchmark(bundle: Bundle, model_description: str, counts: StepCounts, csv_dir: Path, with_tensorflow: bool = True) -> Section:
    """Measure every step variant and return the section with its rows, notes and quantile CSV."""
    log.info("step latency: live step, %d steps per variant", counts.steps)
    samples = measure_live_steps(bundle, default_chain, counts)
    if with_tensorflow:
        log.info("step latency: TensorFlow variants (eager %d, predict %d, unrolled %d calls)", counts.eager_steps, counts.predict_calls, counts.unrolled_calls)
        samples.update(measure_tensorflow_steps(bundle, default_chain(), counts))

    samples_us = {name: microseconds(values) for name, values in samples.items()}
    section = Section("Step latency per note", rows=step_rows(samples_us))
    section.notes = step_notes(model_description, counts, with_tensorflow, default_chain().describe())
    section.notes.append(live_step_budget(samples_us))
    section.csv_files.append(write_quantiles_csv(csv_dir / "step_latency.csv", samples_us, "us"))
    return section


def step_rows(samples_us: dict[str, np.ndarray]) -> list[Row]:
    """Build the rows: the live step against its target, every other variant as a ratio to it."""
    live = samples_us["live step"]
    live_p50 = float(np.percentile(live, 50))
    rows = []
    for name, values in samples_us.items():
        row = latency_row(name, "us", values)
        if name == "live step":
            row.target = f"p99 <= {LIVE_STEP_TARGET_US:g} us"
            row.met = row.p99 <= LIVE_STEP_TARGET_US
        elif name == PREPARE_ROW:
            # Most calls find the next block drawn already: the mean is the cost per note.
            row.value = float(np.mean(values))
            row.ratio = f"mean x{row.value / live_p50:,.2f} the live step (p50)"
        elif name != "floor" and not name.startswith("part:"):
            row.ratio = f"x{row.p50 / live_p50:,.1f} the live step (p50)"
        if name == "model.predict per note":
            row.target = f">= x{PREDICT_RATIO_TARGET:g} the live step"
            row.met = row.p50 / live_p50 >= PREDICT_RATIO_TARGET
        if name == "tf.function step":
            row.target = f">= x{TF_FUNCTION_RATIO_TARGET:g} the live step"
            row.met = row.p50 / live_p50 >= TF_FUNCTION_RATIO_TARGET
        rows.append(row)
    return rows


def live_step_budget(samples_us: dict[str, np.ndarray]) -> str:
    """Describe where the live step's time goes, from this run's medians and p99s."""
    p50 = {name: float(np.percentile(values, 50)) for name, values in samples_us.items()}
    p99 = {name: float(np.percentile(values, 99)) for name, values in samples_us.items()}
    parts = ", ".join(f"{name.removeprefix('part: ')} {value:.1f} us" for name, value in p50.items() if name.startswith("part:"))
    return (
        f"Where the live step's time goes (p50): {parts}. The floor's {LIVE_STEP_NUMPY_CALLS} empty numpy calls take "
        f"{p50['floor']:.1f} us of the live step's {p50['live step']:.1f} us; the rest is the arithmetic, mostly the "
        "one matrix-vector product (65 x 1,024: the Dense layer and the next step's recurrent gates), the two tanh "
        "calls and the sum of the logits and the noise over 768 tokens. "
        f"At p99 the live step takes {p99['live step']:.1f} us and the floor {p99['floor']:.1f} us. "
        "The floor does no work, so its own spread from p50 to p99 is what the interpreter and the other processes "
        "on the machine add by themselves (see the load average above)."
    )


def step_notes(model_description: str, counts: StepCounts, with_tensorflow: bool, chain: str) -> list[str]:
    notes = [
        f"Model: {model_description}; sampler chain {chain!r} (the default of `sideman run`). "
        f"Each variant runs {counts.warmup} untimed steps first, then each step is timed with time.perf_counter_ns: "
        f"{counts.steps:,} live steps per row, {counts.eager_steps:,} eager steps, {counts.predict_calls:,} predict calls "
        f"and {counts.unrolled_calls} calls of the unrolled model, whose per-note figure is the call's time divided by Ty. "
        "The `random n_a` rows use random weights at Keras's initial scales with the same vocabulary. "
        "The `part` rows time the three parts of the live step separately, in one loop that repeats Improviser.draw.",
        "The temperature chooser draws by the Gumbel-max trick: the token is the argmax of logits / T plus standard "
        "Gumbel noise, which is a draw from softmax(logits / T) without the softmax, its cumulative sum or a search. "
        "The noise does not depend on the model's state, so the engine draws it ahead in blocks of 16 notes while it "
        "waits for its next event (Improviser.prepare), and the live step only adds its row. The live step rows time "
        "Improviser.draw alone, with prepare called untimed after each step as the engine does; the "
        f"`{PREPARE_ROW}` row times those calls. Most find the next block drawn already, and one in 16 draws a block, "
        "so its mean is the noise's cost per note.",
        f"`floor` is {LIVE_STEP_NUMPY_CALLS} numpy calls that add four floats each: as many calls as one live step makes, "
        "without the work. It is what this interpreter on this machine costs for the calls alone, "
        "so a live step cannot be faster than it, and its p99 shows how much the other processes on the machine delay a step.",
    ]
    if not with_tensorflow:
        notes.append("TensorFlow variants not measured in this run.")
    return notes
