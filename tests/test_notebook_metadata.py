"""Each notebook's ``bnlessons`` metadata says what it does (.ci/notebook_kinds.py).

The test command chooses by this metadata which notebooks run alone (``timed``) and
which the portability check runs under masked dispatch (``portability``); ``trains``
records which notebooks run an optimiser. Here the metadata is compared with what the
notebook's code does, followed into the ``bnlessons`` functions it calls.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".ci"))
import notebook_kinds  # noqa: E402
from execute_notebooks import notebooks  # noqa: E402

NOTEBOOKS = notebooks([])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.relative_to(ROOT / "book").as_posix()
                                                 for p in NOTEBOOKS])
def test_metadata_says_what_the_notebook_does(path):
    nb = notebook_kinds.read(path)
    meta = nb["metadata"].get(notebook_kinds.KEY)
    assert isinstance(meta, dict) and set(meta) == set(notebook_kinds.FLAGS), \
        f"metadata {notebook_kinds.KEY!r} must set each of {notebook_kinds.FLAGS}: {meta}"
    assert all(isinstance(v, bool) for v in meta.values()), meta
    facts = notebook_kinds.detect(nb)
    assert meta["trains"] == facts.trains, \
        f"the metadata says trains={meta['trains']}, the code says {facts.trains}"
    assert meta["timed"] == facts.timed, \
        f"the metadata says timed={meta['timed']}, the code says {facts.timed}"


def test_the_portability_notebooks_include_training_ones():
    chosen = notebook_kinds.flagged(NOTEBOOKS, "portability")
    assert sum(notebook_kinds.declared(notebook_kinds.read(p))["trains"] for p in chosen) >= 2


@pytest.mark.parametrize("source, trains, timed", [
    ("opt.step()", True, False),
    ("from bnlessons.train import train\nh = train(model, data, 10, 0.1)", True, False),
    ("from bnlessons import train as t\nt.train(model, data, 10, 0.1)", True, False),
    ("from bnlessons.residual import variants\nh = variants.fit_variant('bn', d)", True, False),
    ("from bnlessons.inference import small_batch\nsmall_batch.train_mlp(d, seed=0)", True,
     False),
    ("model.train()\nlayer.train(False)\nmodel.eval()", False, False),
    ("from bnlessons.residual import variants\nm = variants.make_model('bn', depth=2)", False,
     False),
    ("import time\nstart = time.perf_counter()", False, True),
    ("from bnlessons import measure\nmeasure.median_time(f)", False, True),
    ("from bnlessons.inference import deploy\ndeploy.forward_time(model, x)", False, True),
    ("from bnlessons.bn_math import timing\ntiming.benchmark_backward([(4, 2)])", False, True),
    ("from bnlessons import reference\nreference.forward(x, g, b, 1e-5)", False, False),
])
def test_detect_follows_calls_into_bnlessons(source, trains, timed):
    facts = notebook_kinds.detect_source(source)
    assert (facts.trains, facts.timed) == (trains, timed), source


def test_flagged_names_a_bad_flag():
    with pytest.raises(ValueError, match="flag must be one of"):
        notebook_kinds.flagged(NOTEBOOKS, "fast")
