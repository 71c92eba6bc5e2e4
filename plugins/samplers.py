"""Built-in samplers: greedy (the notebook's argmax) and temperature."""

import numpy as np

from sideman.params import Param
from sideman.sampling import Chooser, SamplerContext


class Greedy(Chooser):
    """Choose the most probable token, as the exercise's one_hot(argmax(out)) does."""

    name = "greedy"
    help = "always the most probable token (the notebook's argmax)"

    def choose(self, probabilities: np.ndarray, context: SamplerContext) -> int:
        return int(np.argmax(probabilities))

    # The largest logit is the most probable token, so greedy skips the softmax entirely.
    takes_logits = True

    def choose_logits(self, logits: np.ndarray, context: SamplerContext) -> int:
        return int(logits.argmax())


class Temperature(Chooser):
    """Draw from the distribution sharpened (value < 1) or flattened (value > 1)."""

    name = "temperature"
    help = "draw a token at random, sharpened (below 1) or flattened (above 1)"
    params = (Param("value", float, 1.0, "temperature: 1 draws from the model's distribution, lower is safer, higher is wilder", low=0.05, high=5.0),)
    # Alone in a chain, it draws from the logits with Gumbel noise (`choose_logits`).
    takes_logits = True

    def choose(self, probabilities: np.ndarray, context: SamplerContext) -> int:
        temperature = self.values["value"]
        if temperature != 1.0:
            # p ** (1 / T), computed in log space so tiny probabilities do not underflow to a division by zero.
            with np.errstate(divide="ignore"):
                logits = np.log(probabilities) / temperature
            logits -= logits.max()
            probabilities = np.exp(logits)

        return draw_from_weights(probabilities, context.rng)

    def choose_logits(self, logits: np.ndarray, context: SamplerContext) -> int:
        # Gumbel-max: the index of the largest logits / T + Gumbel noise is
        # distributed as softmax(logits / T), which is p ** (1 / T) normalised.
        scale = 1.0 / self.values["value"]
        if context.noise is None:
            weights = np.exp(scale * (logits - logits.max()))
            return draw_from_weights(weights, context.rng)
        return int(context.noise.perturb(logits, scale).argmax())


def draw_from_weights(weights: np.ndarray, rng: np.random.Generator) -> int:
    """Draw an index with probability proportional to `weights` (non-negative, some positive), by the inverse of the cumulative sum."""
    # The ufunc and array methods below skip the Python wrappers of np.cumsum
    # and np.searchsorted, which cost more than the work on a few hundred floats.
    cumulative = np.add.accumulate(weights)
    draw = rng.random() * cumulative[-1]
    index = int(cumulative.searchsorted(draw, side="right"))
    return min(index, len(weights) - 1)
