"""Chunked work over many images, in worker processes when it pays, with a progress bar."""
from __future__ import annotations

import multiprocessing as mp
from typing import Callable, Iterable, Iterator


def map_chunks(fn: Callable, tasks: list, workers: int, total: int, desc: str, progress: bool,
               count: Callable = len) -> Iterator:
    """fn(task) for each task, in order; in a spawn pool when workers > 1 and there is more than
    one task. The bar advances by count(result) images. Stopping early terminates the pool."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False)
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 and len(tasks) > 1 else None
    try:
        results: Iterable = pool.imap(fn, tasks) if pool else map(fn, tasks)
        for result in results:
            yield result
            bar.update(count(result))
    finally:
        bar.close()
        if pool:
            pool.terminate()
