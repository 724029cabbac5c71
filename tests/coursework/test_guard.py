"""The guard and the package's refusals, without a notebook: a submission that replaces what
the checks rest on, or hands in the package's own answer, gets no marks for it.

The guard's tests run in a fresh interpreter each (the guard arms once per process and the
submissions replace parts of the package), with a dict as the kernel's namespace.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bnlessons import checks, reference, running_stats, train
from bnlessons.bn_math import jacobian
from bnlessons.checks.residual import predicted_variance
from bnlessons.coursework.guard import SIGNED_PREFIX, read_signed
from bnlessons.covariate_shift import ics, noise
from bnlessons.inference import deploy, precise_bn
from bnlessons.models import ResidualBlock
from bnlessons.placement import dropout
from bnlessons.placement.sequences import ChannelLayerNorm
from bnlessons.probes import saturation

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


def graded(tmp_path: Path, answer: str, label: str = "ex") -> list[dict]:
    """Arm the guard in a fresh interpreter, run ``answer`` as the submission, then the check
    through the guard; the signed results it printed."""
    (tmp_path / "key").write_bytes(KEY)
    script = textwrap.dedent(f"""
        from bnlessons.coursework import guard
        ns = {{}}
        exec("from bnlessons import checks", ns)
        guard.arm({str(tmp_path / "key")!r}, ns)
        exec({answer!r}, ns)
        from bnlessons.coursework import guard as g
        g.graded({label!r}, {CHECK!r}, {HIDDEN!r}, [("checks", "bnlessons", "checks")])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (tmp_path / "key").exists()  # the guard deletes the key once read
    return read_signed(done.stdout, KEY)


def test_a_correct_answer_passes_and_a_wrong_one_fails(tmp_path):
    (ok,) = graded(tmp_path, CORRECT)
    assert ok["status"] == "pass" and ok["label"] == "ex"
    (wrong,) = graded(tmp_path, "def mine(rm, rv, x, m):\n    return rm, rv")
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
    ("import torch\ntorch.isfinite = lambda t: torch.ones_like(t, dtype=torch.bool)",
     "torch.isfinite"),
])
def test_replacing_what_the_checks_rest_on_is_flagged(tmp_path, replacement, replaced):
    (result,) = graded(tmp_path, "def mine(rm, rv, x, m):\n    return rm, rv\n" + replacement)
    assert result["status"] == "tampered", result
    assert replaced in result["replaced"], result


def test_a_replaced_guard_cannot_sign(tmp_path):
    fake = ("import bnlessons.coursework.guard as g\n"
            "g.graded = lambda label, *a: print(g.SIGNED_PREFIX + 'e30= ' + '0' * 64)\n"
            "def mine(rm, rv, x, m):\n    return rm, rv")
    assert graded(tmp_path, fake) == []


def test_forged_and_foreign_lines_are_not_read():
    assert read_signed(f"{SIGNED_PREFIX}e30= {'0' * 64}\n[PASS] check: fine\n", KEY) == []
    assert read_signed("nothing here", KEY) == []


def test_delegating_to_the_package_is_refused_inside_the_guard(tmp_path):
    answer = ("from bnlessons import running_stats\n"
              "def mine(rm, rv, x, m):\n    return running_stats.cs231n_update(rm, rv, x, m)")
    (result,) = graded(tmp_path, answer)
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
