"""Time batch norm's backward pass four or five ways and print a table.

Usage: .venv/bin/python .ci/benchmark_bn_backward.py [--repeats R] [--number K]
           [--threads T] [--dtype float32|float64] [--no-keep-memory]
           [--no-compiled] [SHAPE ...]

SHAPE is N,C or N,C,H,W (default: 256,512  64,512  32,64,16,16). For each
shape the methods of ``bnlessons.bn_math.timing`` (staged, compact, autograd through
the plain forward, PyTorch's native kernel) run in interleaved rounds of K
calls; the table shows the median time per call and, per method, how many
times longer it takes than the compact formula (the median of the per-round
ratios). For N,C shapes the compact formula compiled with ``torch.compile``
runs beside them, unless ``--no-compiled`` or there is no C++ compiler (its
first compilation, about half a minute per shape and dtype, is not timed).
Only the backward pass is timed. ``--no-keep-memory`` leaves glibc's
allocator as it is, to see how much allocation noise moves the numbers.
"""
from __future__ import annotations

import argparse
import os
import platform

import torch

from bnlessons import measure
from bnlessons.bn_math import timing

DEFAULT_SHAPES = ((256, 512), (64, 512), (32, 64, 16, 16))


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be N,C or N,C,H,W, got {text!r}") from None
    if len(shape) not in (2, 3, 4) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape must be 2 to 4 positive ints, got {text!r}")
    return shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", type=parse_shape, default=list(DEFAULT_SHAPES))
    parser.add_argument("--repeats", type=int, default=41, help="interleaved rounds")
    parser.add_argument("--number", type=int, default=3, help="calls per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--no-keep-memory", action="store_true",
                        help="do not ask glibc to keep freed memory for reuse")
    parser.add_argument("--no-compiled", action="store_true",
                        help="leave out the torch.compile version of the compact formula")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    kept = False if args.no_keep_memory else measure.keep_freed_memory()
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {args.threads} thread(s) of {os.cpu_count()} cores, "
          f"{platform.machine()}, {args.dtype}, {args.repeats} rounds x {args.number} calls, "
          f"freed memory kept for reuse: {kept}")
    reason = "--no-compiled" if args.no_compiled else timing.can_compile()
    if reason is not None:
        print(f"compiled method left out: {reason}")
    groups = {}  # one table per set of methods: N,C shapes can add the compiled one
    for shape in args.shapes:
        methods = timing.METHODS + ((timing.COMPILED,) if reason is None and len(shape) == 2
                                    else ())
        groups.setdefault(methods, []).append(shape)
    for methods, shapes in groups.items():
        rows = timing.benchmark_backward(shapes, repeats=args.repeats, number=args.number,
                                         methods=methods, dtype=dtype)
        print()
        print(timing.format_table(rows))
        print("\nratios of the fastest rounds (steadier on a busy machine):")
        for row in rows:
            ratios = ", ".join(f"{m}/compact {row.ratio(m, 'compact', stat='min'):.2f}"
                               for m in row.rounds if m != "compact")
            print(f"  {str(row.shape):<20}{ratios}")

if __name__ == "__main__":
    main()
