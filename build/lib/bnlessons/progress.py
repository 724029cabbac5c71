"""A progress bar whose final text is the same on every run.

The bar shows no rates or times, redraws at fixed step counts, and writes to
stdout, so once carriage returns are collapsed its last state reads exactly
``desc: 100%|##########| total/total`` whatever the machine's speed.
"""
from __future__ import annotations

import sys
from typing import Optional, TextIO

from tqdm import tqdm

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt}"


def progress_bar(total: int, desc: str, enabled: bool = True,
                 file: Optional[TextIO] = None) -> tqdm:
    """A tqdm bar over ``total`` steps that redraws every 5% of the way (stdout by default)."""
    return tqdm(
        total=total,
        desc=desc,
        disable=not enabled,
        file=file if file is not None else sys.stdout,
        bar_format=BAR_FORMAT,
        ascii=True,
        mininterval=0.0,
        maxinterval=float("inf"),
        miniters=max(1, total // 20),
        dynamic_ncols=False,
        leave=True,
    )
