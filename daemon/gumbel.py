"""Gumbel noise for drawing a token by the Gumbel-max trick, drawn ahead of the notes that use it.

The index of the largest `scale * logits + G`, where each G is an independent
standard Gumbel variable, is distributed as softmax(scale * logits). That
draw needs one addition and one argmax per note, where the inverse of the
cumulative distribution needs an exp, a cumulative sum and a search over the
whole vocabulary. The noise does not depend on the model's state, so it is
drawn in blocks of rows while the engine waits for its next event (`prepare`),
and a note only reads its row.

Row n of the noise is a function of the seed and n alone: block b is drawn
from the seed's generator advanced by b * BLOCK_STRIDE draws. A rollback
therefore only moves `position` back, and a replay after it reads the same
rows whether or not `prepare` ran in between.
"""

import numpy as np

BLOCK_ROWS = 16  # rows drawn at a time: a block of 768 tokens took about 0.2 ms on the benchmark machine
# Distance in 64-bit draws between the starts of two blocks. A block of
# 16 x 768 exponential variables takes about one draw each, plus the rare
# rejections, far fewer than 2**40, so the blocks never share a draw.
BLOCK_STRIDE = 1 << 40
# Stream of the noise's generator within the seed (numpy's SeedSequence
# spawn key), so that it is independent of the sampler's own generator from
# the same seed.
NOISE_STREAM = 1
# An exponential variable of exactly 0 would make its token's noise infinite.
# Raising it to the smallest normal float32 changes the draw's distribution
# only for values of probability about 1e-38.
SMALLEST_EXPONENTIAL = float(np.finfo(np.float32).tiny)


class GumbelNoise:
    """Rows of standard Gumbel noise, one per draw, for a vocabulary of `size` tokens.

    `position` is the index of the row the next draw reads. `prepare` draws
    the block of that row and the one after it, so `next_row` only reads.
    """

    def __init__(self, size: int, seed: int | None, block_rows: int = BLOCK_ROWS):
        self.size = size
        self.block_rows = block_rows
        self.position = 0
        self._blocks: dict[int, np.ndarray] = {}
        self._scratch = np.empty(size, dtype=np.float32)
        # The latest scale as a 0-d float32 array: numpy converts a Python float operand on every call.
        self._scale = np.array(1.0, dtype=np.float32)
        self.reseed(seed)

    def reseed(self, seed: int | None) -> None:
        """Start the noise again from row 0 of the generator that `seed` selects."""
        sequence = np.random.SeedSequence(seed, spawn_key=(NOISE_STREAM,))
        self._generator = np.random.Generator(np.random.PCG64(sequence))
        self._origin = self._generator.bit_generator.state
        self._blocks.clear()
        self.position = 0

    def prepare(self) -> None:
        """Draw the blocks that the next draws read, if they are missing, and forget the ones behind them.

        The block before the current one is kept, because a rollback may go
        back across a block's boundary.
        """
        block = self.position // self.block_rows
        for index in (block, block + 1):
            if index not in self._blocks:
                self._blocks[index] = self._draw_block(index)
        for index in [index for index in self._blocks if index < block - 1]:
            del self._blocks[index]

    def next_row(self) -> np.ndarray:
        """Return the row at `position` and move to the next one. The row is read-only."""
        block, row = divmod(self.position, self.block_rows)
        rows = self._blocks.get(block)
        if rows is None:
            # Offline rendering never calls `prepare`, and the engine skips it when a note is due at once.
            rows = self._draw_block(block)
            self._blocks[block] = rows
        self.position += 1
        return rows[row]

    def perturb(self, logits: np.ndarray, scale: float) -> np.ndarray:
        """Return scale * logits + the next row, in a buffer that the next call overwrites."""
        noise = self.next_row()
        scratch = self._scratch
        if scale == 1.0:
            np.add(logits, noise, out=scratch)
        else:
            if scale != self._scale:
                self._scale[...] = scale
            np.multiply(logits, self._scale, out=scratch)
            np.add(scratch, noise, out=scratch)
        return scratch

    def _draw_block(self, block: int) -> np.ndarray:
        """Draw block `block`: -log of exponential variables, from the generator advanced to the block's start."""
        bit_generator = self._generator.bit_generator
        bit_generator.state = self._origin
        bit_generator.advance(block * BLOCK_STRIDE)

        rows = np.empty((self.block_rows, self.size), dtype=np.float32)
        self._generator.standard_exponential(out=rows, dtype=np.float32)
        np.maximum(rows, SMALLEST_EXPONENTIAL, out=rows)
        np.log(rows, out=rows)
        np.negative(rows, out=rows)
        rows.flags.writeable = False
        return rows
