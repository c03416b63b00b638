"""Parallel, ordered, memory-bounded encoding of text batches into flat token arrays.

Each worker process holds one copy of the Rust tokenizer (rebuilt from its JSON, so workers never import
transformers) and turns a batch of texts into ``(lengths, tokens)``: the token count of every document
(EOD included) and all their ids concatenated, each document followed by the EOD id, in the output dtype.
The parent keeps at most ``window`` batches in flight and yields results in submission order, so the output is
identical for any number of workers and memory does not depend on the corpus size.
"""

from __future__ import annotations

import itertools
import multiprocessing
import operator
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator, TypeVar

import numpy as np

T = TypeVar("T")

_STATE: dict = {}
_IDS = operator.attrgetter("ids")


def init_encoder(tokenizer_json: str, eod_id: int, vocab_size: int, dtype: str) -> None:
    """Set up this process's tokenizer (called once per worker, or in-process for one worker)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # parallelism comes from the worker processes
    from tokenizers import Tokenizer

    _STATE.update(
        tokenizer=Tokenizer.from_str(tokenizer_json),
        eod_id=eod_id,
        vocab_size=vocab_size,
        dtype=np.dtype(dtype),
    )


def encode_batch(texts) -> tuple[np.ndarray, np.ndarray]:
    """Encode texts (a list of str or a pyarrow string array) without special tokens and append EOD to each.

    Returns ``(lengths int64, tokens dtype)``: tokens per document (EOD included) and all tokens concatenated.
    """
    tokenizer = _STATE["tokenizer"]
    if not isinstance(texts, list):
        texts = texts.to_pylist()
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e) + 1 for e in encodings), dtype=np.int64, count=len(encodings))
    # ids of document 0, (EOD,), ids of document 1, (EOD,), ... flattened straight into the output dtype
    eod = (_STATE["eod_id"],)
    pieces = itertools.chain.from_iterable(zip(map(_IDS, encodings), itertools.repeat(eod)))
    tokens = np.fromiter(
        itertools.chain.from_iterable(pieces), dtype=_STATE["dtype"], count=int(lengths.sum())
    )
    if tokens.size and int(tokens.max()) >= _STATE["vocab_size"]:
        raise ValueError(
            f"token id {int(tokens.max())} is outside the vocabulary ({_STATE['vocab_size']} ids)"
        )
    return lengths, tokens


class OrderedPool:
    """``map`` over an iterable with ``workers`` processes, at most ``window`` items in flight, in order.

    With ``workers == 1`` everything runs in this process (no pickling, easiest to debug and profile).
    """

    def __init__(self, workers: int, initializer, initargs: tuple, window: int | None = None) -> None:
        self.workers = max(1, workers)
        self.window = window or 2 * self.workers
        self._initializer, self._initargs = initializer, initargs
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> "OrderedPool":
        if self.workers == 1:
            self._initializer(*self._initargs)
        else:
            # spawn: the parent may hold Arrow / Rust thread pools, which are not fork-safe.
            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=self._initializer,
                initargs=self._initargs,
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def map(self, fn, items: Iterable[T]) -> Iterator:
        if self._executor is None:
            for item in items:
                yield fn(item)
            return
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(self._executor.submit(fn, item))
                if len(pending) >= self.window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool as error:
            raise RuntimeError(
                "a worker process died (killed for memory? a script that starts workers needs an "
                "`if __name__ == '__main__':` guard, see 'Safe importing of main module' in the "
                "multiprocessing docs)"
            ) from error
