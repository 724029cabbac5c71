"""The guard and the package's refusals, without a notebook: a submission that replaces what
the checks rest on, or hands in the package's own answer, gets no marks for it.

The guard's tests run each in a process of its own (the guard arms once per process and the
submissions replace parts of the package), forked from one that has imported torch and the
checks, with a dict as the kernel's namespace.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import torch

from bnlessons import checks, reference, running_stats, train
from bnlessons.bn_math import jacobian
from bnlessons.checks.residual import predicted_variance
from bnlessons.coursework.guard import SIGNED_PREFIX, read_signed
from bnlessons.coursework.lesson import exercises, lesson_paths
from bnlessons.covariate_shift import ics, noise
from bnlessons.inference import deploy, precise_bn
from bnlessons.models import ResidualBlock
from bnlessons.placement import dropout
from bnlessons.placement.sequences import ChannelLayerNorm
from bnlessons.probes import saturation
from bnlessons.residual import fixup

ROOT = Path(__file__).resolve().parents[2]
KEY = b"0123456789abcdef0123456789abcdef"
CORRECT = """
def mine(rm, rv, x, m):
    dims = (0,) + tuple(range(2, x.dim()))
    return (m * rm + (1 - m) * x.mean(dim=dims),
            m * rv + (1 - m) * x.var(dim=dims, unbiased=False))
"""
CHECK = "verdict = checks.check_cs231n_update(mine)\nassert verdict.passed"
HIDDEN = "checks.require(checks.check_cs231n_update(mine, seed=5, verbose=False))"


#: A process that has imported torch and the checks once, and runs each script it is sent in
#: a child of its own (forked, so each starts from that state, with the guard not yet armed).
FORKER = textwrap.dedent("""
    import json, os, signal, sys, traceback
    import torch
    import bnlessons.checks, bnlessons.coursework.guard
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            signal.alarm(120)
            sys.stdout = open(job["out"], "w")
            sys.stderr = open(job["out"] + ".err", "w")
            rc = 0
            try:
                exec(job["script"], {})
            except BaseException:
                traceback.print_exc()
                rc = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)
""")


@pytest.fixture(scope="module")
def forker():
    proc = subprocess.Popen([sys.executable, "-c", FORKER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    yield proc
    proc.stdin.close()
    proc.wait(timeout=60)


@pytest.fixture
def graded(forker, tmp_path):
    """``graded(answer)``: arm the guard in a process of its own, run ``answer`` as the
    submission, then the check (``check``, ``hidden``: a CS231n update's unless given)
    through the guard; the signed results it printed."""

    def run(answer: str, label: str = "ex", check: str = CHECK,
            hidden: str = HIDDEN) -> list[dict]:
        (tmp_path / "key").write_bytes(KEY)
        script = textwrap.dedent(f"""
            from bnlessons.coursework import guard
            ns = {{}}
            exec("from bnlessons import checks", ns)
            guard.arm({str(tmp_path / "key")!r}, ns)
            exec({answer!r}, ns)
            from bnlessons.coursework import guard as g
            g.graded({label!r}, {check!r}, {hidden!r},
                     [("checks", "bnlessons", "checks"), ("reference", "bnlessons", "reference")])
        """)
        out = tmp_path / "out"
        forker.stdin.write(json.dumps({"script": script, "out": str(out)}) + "\n")
        forker.stdin.flush()
        rc = forker.stdout.readline().strip()
        assert rc == "0", (rc, Path(f"{out}.err").read_text()[-2000:])
        assert not (tmp_path / "key").exists()  # the guard deletes the key once read
        return read_signed(out.read_text(), KEY)

    return run


def test_a_correct_answer_passes_and_a_wrong_one_fails(graded):
    (ok,) = graded(CORRECT)
    assert ok["status"] == "pass" and ok["label"] == "ex"
    (wrong,) = graded("def mine(rm, rv, x, m):\n    return rm, rv")
    assert wrong["status"] == "fail" and "running_mean is off" in wrong["message"]


@pytest.mark.parametrize("replacement, replaced", [
    ("import bnlessons.checks as c\n"
     "c.check_cs231n_update = lambda *a, **k: c.Verdict('check_cs231n_update', True, 'ok')",
     "bnlessons.checks.check_cs231n_update"),
    ("import bnlessons.checks.inference as c\nc.compare = lambda *a, **k: ''",
     "bnlessons.checks.inference.compare"),
    ("import bnlessons.checks as c, bnlessons.checks.common as cc\n"
     "class V(cc.Verdict):\n    passed = True\n"
     "c.Verdict = cc.Verdict = V", "bnlessons.checks.Verdict"),
    ("import bnlessons.checks as c\nc.require = lambda *v: None", "bnlessons.checks.require"),
    ("import bnlessons.checks.common as cc\ncc.Verdict.__bool__ = lambda self: True",
     "bnlessons.checks.common.Verdict.__bool__"),
    ("import bnlessons._own_work as o\no.refuse = lambda *a: None", "bnlessons._own_work.refuse"),
    ("import bnlessons.checks.common as cc\ncc.require.__code__ = (lambda *v: None).__code__",
     "bnlessons.checks.common.require"),
    ("import bnlessons.running_stats as r\nr.blend = lambda *a, **k: a[0]",
     "bnlessons.running_stats.blend"),
    ("import bnlessons.coursework.guard as g\n"
     "g._outcome = lambda *a: {'status': 'pass', 'message': 'ok'}",
     "bnlessons.coursework.guard._outcome"),
])
def test_replacing_what_the_checks_rest_on_is_flagged(graded, replacement, replaced):
    (result,) = graded("def mine(rm, rv, x, m):\n    return rm, rv\n" + replacement)
    assert result["status"] == "tampered", result
    assert replaced in result["replaced"], result


def test_a_correct_answer_that_uses_torch_freely_is_not_flagged(graded):
    """Lessons and answers seed torch, make tensors and reach parts of torch that change
    torch's own attributes (importing ``torch._dynamo`` wraps ``torch.manual_seed``): none of
    that is tampering."""
    answer = CORRECT + textwrap.dedent("""
        import torch
        import torch._dynamo  # noqa: F401 - replaces torch.manual_seed by a wrapper
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(8, 3, generator=gen, dtype=torch.float64)
        storage, _ = torch.Storage, torch.func.jacrev(lambda t: t.sin().sum())(x)
        rm, rv = mine(x.mean(0), x.var(0), x, 0.9)
    """)
    (ok,) = graded(answer)
    assert ok["status"] == "pass", ok


def test_a_replaced_guard_cannot_sign(graded):
    fake = ("import bnlessons.coursework.guard as g\n"
            "g.graded = lambda label, *a: print(g.SIGNED_PREFIX + 'e30= ' + '0' * 64)\n"
            "def mine(rm, rv, x, m):\n    return rm, rv")
    assert graded(fake) == []


def test_forged_and_foreign_lines_are_not_read():
    assert read_signed(f"{SIGNED_PREFIX}e30= {'0' * 64}\n[PASS] check: fine\n", KEY) == []
    assert read_signed("nothing here", KEY) == []


def test_delegating_to_the_package_is_refused_inside_the_guard(graded):
    answer = ("from bnlessons import running_stats\n"
              "def mine(rm, rv, x, m):\n    return running_stats.cs231n_update(rm, rv, x, m)")
    (result,) = graded(answer)
    assert result["status"] == "fail"
    assert "calls the package's own bnlessons.running_stats.cs231n_update" in result["message"]


class Noise(noise.ShiftScaleNoise):
    pass


#: Every code exercise's check, with an answer that only calls the package's own answer.
DELEGATING = {
    "check_saturation": lambda: checks.check_saturation(lambda z, t: saturation(z, t)),
    "check_percentile_probe": lambda: checks.check_percentile_probe(
        lambda m, x, mod: ics.percentile_probe(m, x, mod)),
    "check_noise_layer": lambda: checks.check_noise_layer(Noise),
    "check_forward": lambda: checks.check_forward(
        lambda x, g, b, e: reference.forward(x, g, b, e)),
    "check_forward (per channel)": lambda: checks.check_forward(
        lambda x, g, b, e: reference.forward(x, g, b, e), shapes=checks.SHAPES_4D),
    "check_staged_backward": lambda: checks.check_staged_backward(
        reference.forward, lambda d, c: reference.backward_staged(d, c)),
    "check_backward": lambda: checks.check_backward(reference.forward,
                                                    lambda d, c: reference.backward(d, c)),
    "check_dx_properties": lambda: checks.check_dx_properties(
        reference.forward, lambda d, c: reference.backward(d, c)),
    "check_bn_jacobian": lambda: checks.check_bn_jacobian(
        lambda x, g, e: jacobian.bn_jacobian(x, g, e)),
    "check_pytorch_update": lambda: checks.check_pytorch_update(
        lambda rm, rv, n, x, m: running_stats.pytorch_update(rm, rv, n, x, m)),
    "check_cs231n_update": lambda: checks.check_cs231n_update(
        lambda rm, rv, x, m: running_stats.cs231n_update(rm, rv, x, m)),
    "check_evaluate": lambda: checks.check_evaluate(
        lambda m, x, y, b: train.evaluate(m, x, y, b)[1]),
    "check_precise_bn": lambda: checks.check_precise_bn(
        lambda m, x, b: precise_bn.recompute_bn_stats(m, x, b)),
    "check_fold_linear": lambda: checks.check_fold_linear(
        lambda lin, bn: (lambda f: (f.weight, f.bias))(deploy.fold_linear_bn(lin, bn))),
    "check_dropout_variance_ratio": lambda: checks.check_dropout_variance_ratio(
        lambda c, v, p: dropout.variance_ratio(c, v, p)),
    "check_weighted_dropout_ratio": lambda: checks.check_weighted_dropout_ratio(
        lambda w, mean, cov, p: dropout.weighted_sum_variance_ratio(w, mean, cov, p)),
    "check_preact_block": lambda: checks.check_preact_block(
        lambda w: ResidualBlock(w, norm="bn", branch_layers=2)),
    "check_causal_norm": lambda: checks.check_causal_norm(ChannelLayerNorm),
    "check_variance_prediction": lambda: checks.check_variance_prediction(
        lambda d, n, a: predicted_variance(d, n, a)),
    "check_skipinit_block": lambda: checks.check_skipinit_block(
        lambda w: ResidualBlock(w, scale=0.0)),
    "check_fixup_exponent": lambda: checks.check_fixup_exponent(
        lambda k: -math.log(fixup.fixup_rescale(2, k)) / math.log(2)),
}
#: Checks the package ships no answer for (nothing to hand in but the learner's own work).
NO_PACKAGE_ANSWER = {"check_update_ratio", "check_scale_answers", "check_drop_bias",
                     "check_largest_stable_lr"}


def test_every_check_is_classified():
    names = {n for n in checks.__all__ if n.startswith("check_")}
    assert names == {k.split()[0] for k in DELEGATING} | NO_PACKAGE_ANSWER


@pytest.mark.parametrize("name", sorted(DELEGATING))
def test_an_answer_that_calls_the_package_fails_saying_why(name, capsys):
    verdict = DELEGATING[name]()
    assert not verdict.passed and not verdict.todo, verdict
    assert "calls the package's own bnlessons." in verdict.message, verdict
    assert "write it yourself" in capsys.readouterr().out


def test_the_package_still_runs_outside_a_learners_code():
    x = torch.randn(6, 3, dtype=torch.float64)
    out, cache = reference.forward(x, torch.ones(3, dtype=torch.float64),
                                   torch.zeros(3, dtype=torch.float64))
    assert reference.backward(torch.ones_like(out), cache)[0].abs().max() < 1e-12
    assert ResidualBlock(4, style="pre") is not None


def test_resetting_the_record_of_the_running_check_fails():
    def sneaky(rm, rv, x, m):
        from bnlessons import _own_work
        _own_work._run = None
        return running_stats.cs231n_update(rm, rv, x, m)

    verdict = checks.check_cs231n_update(sneaky, verbose=False)
    assert not verdict.passed and "changed which check is running" in verdict.message


#: For every code exercise of the book, an answer that only hands in the package's own.
HANDED_IN = {
    "ex-ch1-saturation": "from bnlessons.probes import saturation\n"
                         "def my_saturation(z, threshold):\n    return saturation(z, threshold)",
    "ex-ch1-percentile-probe": "from bnlessons.covariate_shift import ics\n"
                               "def my_probe(model, x, module):\n"
                               "    return ics.percentile_probe(model, x, module)",
    "ex-ch1-noise-layer": "from bnlessons.covariate_shift import noise\n"
                          "class MyNoise(noise.ShiftScaleNoise):\n    pass",
    "ex-forward-by-hand": "from bnlessons import reference\nmy_forward = reference.forward",
    "ex-ch2-per-channel": "from bnlessons import reference\n"
                          "def my_forward_4d(x, gamma, beta, eps):\n"
                          "    return reference.forward(x, gamma, beta, eps)",
    "ex-ch2-staged-backward": "from bnlessons import reference\n"
                              "my_staged_backward = reference.backward_staged",
    "ex-ch2-compact-backward": "from bnlessons import reference\nmy_backward = reference.backward",
    "ex-ch2-bn-jacobian": "from bnlessons.bn_math.jacobian import bn_jacobian as my_jacobian",
    "ex-ch3-pytorch-update": "from bnlessons import running_stats\n"
                             "my_pytorch_update = running_stats.pytorch_update",
    "ex-ch3-cs231n-update": "from bnlessons import running_stats\n"
                            "my_cs231n_update = running_stats.cs231n_update",
    "ex-ch3-broken-eval-loop": "from bnlessons import train\n"
                               "def my_evaluate(model, x, y, batch_size):\n"
                               "    return train.evaluate(model, x, y, batch_size)[1]",
    "ex-ch3-precise-bn": "from bnlessons.inference.precise_bn import recompute_bn_stats\n"
                         "my_recompute = recompute_bn_stats",
    "ex-ch3-fold-linear": "from bnlessons.inference import deploy\n"
                          "def my_fold(linear, bn):\n"
                          "    folded = deploy.fold_linear_bn(linear, bn)\n"
                          "    return folded.weight, folded.bias",
    "ex-ch4-dropout-ratio": "from bnlessons.placement import dropout\n"
                            "my_ratio = dropout.weighted_sum_variance_ratio",
    "ex-ch4-preact-block": "from bnlessons import models\n"
                           "def PreActBlock(width):\n"
                           "    return models.ResidualBlock(width, norm='bn', branch_layers=2)",
    "ex-ch4-causal-norm": "from bnlessons.placement.sequences import ChannelLayerNorm\n"
                          "MyCausalNorm = ChannelLayerNorm",
    "ex-ch5-predict-variance": "from bnlessons.checks.residual import predicted_variance\n"
                               "predict_variance = predicted_variance",
    "ex-ch5-skipinit-block": "from bnlessons import models\n"
                             "def SkipInitBlock(width):\n"
                             "    return models.ResidualBlock(width, scale=0.0)",
    "ex-ch5-fixup-exponent": "import math\nfrom bnlessons.residual import fixup\n"
                             "def fixup_exponent(k):\n"
                             "    return -math.log(fixup.fixup_rescale(2, k)) / math.log(2)",
}
#: Exercises whose answer the package does not ship.
NOT_SHIPPED = {"ex-ch2-scale-factors", "ex-ch2-update-to-data", "ex-ch4-drop-bias",
               "ex-ch5-largest-stable-lr"}
BOOK = ROOT / "book"
GRADED = {ex.label: (nb, ex) for nb in (nbformat.read(p, 4) for p in lesson_paths(BOOK))
          for ex in exercises(nb) if ex.graded}


def test_every_code_exercise_has_a_handed_in_answer():
    assert set(GRADED) == set(HANDED_IN) | NOT_SHIPPED and not set(HANDED_IN) & NOT_SHIPPED


@pytest.mark.parametrize("label", sorted(HANDED_IN))
def test_handing_in_the_packages_answer_scores_0_under_the_lessons_own_check(graded, label):
    """The guard runs the lesson's own check and hidden tests on the handed-in answer: the
    exercise fails, saying why, and nothing is flagged (calling the package is not tampering)."""
    nb, ex = GRADED[label]
    check, hidden = nb.cells[ex.check_cell].source, nb.cells[ex.hidden_cell].source
    (result,) = graded(HANDED_IN[label], label, check, hidden)
    assert result["status"] == "fail", result
    assert "calls the package's own bnlessons." in result["message"], result
