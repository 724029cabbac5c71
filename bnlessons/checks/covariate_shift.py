"""Checks for the covariate-shift topics: saturation, the percentile probe, the noise layer."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bnlessons.checks.common import Verdict, call_learner, gradable, not_a_number, report
from bnlessons.covariate_shift import ics, shift
from bnlessons.covariate_shift.noise import MEAN_RANGE, SAMPLE_RANGE, SAMPLE_STD, SCALE_RANGE
from bnlessons.models import MLP

SATURATION_TOL = 1e-6  # a float32 mean of 5,000 values is accurate to about 1e-7
PROBE_TOL = 1e-9
# (mean, std, threshold) of the Gaussian samples the saturation check uses
SATURATION_CASES: tuple[tuple[float, float, float], ...] = (
    (3.0, 2.0, 4.0), (0.0, 1.0, 4.0), (-5.0, 0.5, 4.0), (1.0, 3.0, 2.5))


def _saturation_problem(z: torch.Tensor, threshold: float, got: tuple[float, float],
                        want: tuple[float, float], tol: float) -> str:
    """What is wrong with ``got`` = (fraction, mean_slope), or "" if nothing is.

    Compares with the answers that plausible slips give, so the message can
    name the slip; it never shows the right answer.
    """
    fraction, slope = got
    if not abs(fraction - want[0]) <= tol:
        slips = {
            "that is the unsaturated share: count |z| > threshold":
                float((z.abs() <= threshold).double().mean()),
            "that counts only one tail: a sigmoid is flat for large negative z too, "
            "so compare |z| (z.abs()) with the threshold":
                float((z > threshold).double().mean()),
            "that counts only the negative tail: compare |z| (z.abs()) with the "
            "threshold": float((z < -threshold).double().mean()),
        }
        for hint, value in slips.items():
            if abs(fraction - value) <= tol and abs(value - want[0]) > tol:
                return f"fraction {fraction:.4f} is wrong: {hint}"
        return (f"fraction {fraction:.4f} is wrong by more than {tol:.0e}: it is the share "
                "of samples with |z| > threshold, a mean of 0/1 indicators")
    if not abs(slope - want[1]) <= tol:
        s = torch.sigmoid(z)
        mean_s = float(s.mean())
        slips = {
            "that is the slope at the mean input; average the slope over the samples":
                float(shift.sigmoid_slope(z.mean())),
            "that is mean(sigmoid) * (1 - mean(sigmoid)); take sigmoid(z) * (1 - sigmoid(z)) "
            "for each sample, then average": mean_s * (1 - mean_s),
            "that is the mean of sigmoid(z), the unit's output; the slope is "
            "sigmoid(z) * (1 - sigmoid(z))": mean_s,
            "that is the slope at z = 0; use sigmoid(z) * (1 - sigmoid(z)) at each "
            "sample, then average": 0.25,
        }
        for hint, value in slips.items():
            if abs(slope - value) <= max(tol, 1e-6) and abs(value - want[1]) > tol:
                return f"mean_slope {slope:.4f} is wrong: {hint}"
        return (f"mean_slope {slope:.4f} is wrong by more than {tol:.0e}: it is the mean over "
                "the samples of sigmoid(z) * (1 - sigmoid(z))")
    return ""


@gradable
def check_saturation(fn: Callable, tol: float = SATURATION_TOL,
                     verbose: bool = True, seed: int = 11) -> Verdict:
    """Check ``fn(z, threshold) -> (fraction, mean_slope)`` for samples ``z`` of a sigmoid input.

    ``fraction`` is the share of entries with |z| > threshold and ``mean_slope``
    the mean of sigmoid'(z). Both must match ``bnlessons.covariate_shift.shift.saturation``
    to absolute error ``tol`` on float64 samples of several Gaussians, drawn
    with ``seed`` (a float32 computation passes). A failure names the slip
    behind a wrong number (one tail only, the unsaturated share, the slope at
    the mean input, ...) without showing the right number.
    """
    name = "check_saturation"
    g = torch.Generator().manual_seed(seed)
    for mean, std, threshold in SATURATION_CASES:
        z = mean + std * torch.randn(5000, generator=g, dtype=torch.float64)
        note = f"(z ~ N({mean:g}, {std:g}^2), threshold {threshold:g})"
        want = shift.saturation(z, threshold)
        result = call_learner(name, fn, z.clone(), threshold, verbose=verbose, note=note)
        if isinstance(result, Verdict):
            return result
        if not (isinstance(result, tuple) and len(result) == 2):
            return report(Verdict(name, False, "return a pair (fraction, mean_slope) "
                                   f"{note}"), verbose)
        for label, value in zip(("fraction", "mean_slope"), result):
            what = not_a_number(value)
            if what is not None:
                return report(Verdict(name, False, f"{label} should be one number, got {what} "
                                       f"{note}"), verbose)
        got = tuple(float(v) for v in result)
        problem = _saturation_problem(z, threshold, got, want, tol)
        if problem:
            return report(Verdict(name, False, f"{problem} {note}"), verbose)
    return report(Verdict(name, True, f"both match to {tol:.0e} on "
                           f"{len(SATURATION_CASES)} input distributions"), verbose)


def _probe_model(seed: int) -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLP(12, 3, width=9, depth=3, activation="sigmoid", norm="bn", init=0.5).double()
    with torch.no_grad():
        for block in model.blocks:
            block.norm.running_mean.copy_(torch.randn(9, generator=g, dtype=torch.float64))
            block.norm.running_var.copy_(torch.rand(9, generator=g, dtype=torch.float64) + 0.5)
    x = torch.randn(40, 12, generator=g, dtype=torch.float64) * 2
    return model.train(), x


@gradable
def check_percentile_probe(fn: Callable, tol: float = PROBE_TOL,
                           verbose: bool = True, seed: int = 1) -> Verdict:
    """Check ``fn(model, x, module) -> tensor (3, units)``: the 15th, 50th and 85th
    percentiles over the batch of ``module``'s input, with the model in eval mode.

    Uses float64 sigmoid MLPs with BN whose running statistics are not the
    defaults (so forgetting eval mode shows). The model must come back in the
    mode it was in, every submodule included, with its running statistics
    unchanged: the model built from ``seed`` arrives in training mode, the one
    built from ``seed + 1`` in eval mode.
    """
    name = "check_percentile_probe"

    def fail(message: str) -> Verdict:
        return report(Verdict(name, False, message), verbose)

    for model_seed, arrives_training in ((seed, True), (seed + 1, False)):
        model, x = _probe_model(model_seed)
        model.train(arrives_training)
        mode = "training" if arrives_training else "eval"
        stats = [b.norm.running_mean.clone() for b in model.blocks]
        for layer in (0, 2):
            module = model.blocks[layer].act
            note = f"(hidden layer {layer + 1}, batch {tuple(x.shape)}, model in {mode} mode)"
            want = ics.percentile_probe(model, x, module)
            got = call_learner(name, fn, model, x.clone(), module, verbose=verbose, note=note)
            if isinstance(got, Verdict):
                return got
            if any(m.training != arrives_training for m in model.modules()):
                return fail(f"the model arrived in {mode} mode and some of it left in the other "
                            "mode: save model.training first and restore it with "
                            "model.train(was_training)")
            if any(not torch.equal(s, b.norm.running_mean) for s, b in zip(stats, model.blocks)):
                return fail("BN's running statistics changed: run the probe in eval mode so "
                            "BN only reads them")
            if not isinstance(got, torch.Tensor):
                return fail(f"return a tensor, got {type(got).__name__} {note}")
            if got.shape != want.shape:
                hint = " (transposed?)" if got.shape == want.T.shape else ""
                return fail(f"shape {tuple(got.shape)}, expected {tuple(want.shape)} = "
                            f"(3 percentiles, units){hint} {note}")
            err = float((got.double() - want).abs().max())
            if not err <= tol:
                if float((got.double() - torch.sigmoid(want)).abs().max()) < 1e-2:
                    return fail(f"these are percentiles of the module's output, sigmoid(z) "
                                f"{note}; the probe is about its input z: keep inputs[0] "
                                "in the hook, not output")
                return fail(f"percentiles are off by up to {err:.3g} {note}; use the 15th, "
                            "50th and 85th of the module's input over the batch (dimension "
                            "0) with linear interpolation (torch.quantile's default)")
    return report(Verdict(name, True, f"match to {tol:.0e}; model left as found"),
                  verbose)


def _noise_input(units: int, rows: int) -> torch.Tensor:
    """Half the rows all 0 (output = m), half all 1 (output = s + m)."""
    a = torch.zeros(rows, units, dtype=torch.float64)
    a[rows // 2:] = 1.0
    return a


def _run_noise_layer(make_layer: Callable[[], nn.Module], a: torch.Tensor
                     ) -> tuple[object, object, torch.Tensor, object]:
    """Build the learner's layer; two training-mode outputs, the input with its gradient,
    and the eval-mode output."""
    layer = make_layer()
    layer.train()
    out = layer(a.clone())
    out2 = layer(a.clone())
    a_grad = a.clone().requires_grad_(True)
    layer(a_grad).sum().backward()
    layer.eval()
    out_eval = layer(a.clone())
    return out, out2, a_grad, out_eval


@gradable
def check_noise_layer(make_layer: Callable[[], nn.Module], verbose: bool = True,
                      seed: int = 7) -> Verdict:
    """Check a noisy-BN noise layer built by ``make_layer()``, statistically.

    Expected, in training mode, for input ``a`` of shape (N, C):
    ``s * a + m`` with, per unit and call, mu ~ U(-0.5, 0.5), sigma ~ U(1, 1.25),
    and per sample and unit m ~ U(mu - 0.1, mu + 0.1), s ~ N(sigma, 0.1);
    gradients flow to ``a``; in eval mode the expected transform ``1.125 * a``.
    Tolerances are many standard errors wide for the sample sizes used. The
    layer draws its noise from the global generator, seeded with ``seed``
    inside a fork (the caller's random state is left alone).
    """
    name = "check_noise_layer"
    units, rows = 256, 4000
    a = _noise_input(units, rows)
    zeros, ones = slice(0, rows // 2), slice(rows // 2, rows)
    sigma_mid = sum(SCALE_RANGE) / 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        result = call_learner(name, _run_noise_layer, make_layer, a, verbose=verbose,
                              who="your layer")
    if isinstance(result, Verdict):
        return result
    out, out2, a_grad, out_eval = result

    def fail(message: str) -> Verdict:
        return report(Verdict(name, False, message), verbose)

    for label, t in (("training output", out), ("eval output", out_eval)):
        if not isinstance(t, torch.Tensor) or t.shape != a.shape or t.dtype != a.dtype:
            got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t)
            return fail(f"{label} should be a tensor of shape {tuple(a.shape)} and dtype "
                        f"{a.dtype}, got {got}")
    m = out[zeros]  # rows where a = 0: the shift alone
    mu_hat = m.mean(0)
    width = (m.max(0).values - m.min(0).values).max().item()
    if width > 2 * SAMPLE_RANGE + 1e-9:
        return fail(f"where a = 0 the output should be the shift m, within +-{SAMPLE_RANGE} of "
                    f"its unit's mu; one unit's values span {width:.3f}")
    if mu_hat.abs().max().item() > MEAN_RANGE + SAMPLE_RANGE:
        return fail(f"the per-unit mean shift mu should lie in [-{MEAN_RANGE}, {MEAN_RANGE}]; "
                    f"found a unit at {mu_hat.abs().max().item():.3f}")
    mu_spread = mu_hat.std().item()
    if not 0.2 < mu_spread < 0.38:
        return fail(f"the per-unit shifts mu should be spread like U(-0.5, 0.5) (std 0.29) "
                    f"across units; their std is {mu_spread:.3f}")
    m_std = m.std(0).median().item()
    if not 0.045 < m_std < 0.07:
        return fail(f"per sample, m ~ U(mu - 0.1, mu + 0.1) has std 0.058 within a unit; "
                    f"yours has {m_std:.3f}")
    sigma_hat = out[ones].mean(0) - mu_hat
    if not (sigma_hat.min().item() > SCALE_RANGE[0] - 0.03
            and sigma_hat.max().item() < SCALE_RANGE[1] + 0.03):
        return fail(f"the per-unit scale sigma should lie in [{SCALE_RANGE[0]}, "
                    f"{SCALE_RANGE[1]}]; found units between {sigma_hat.min().item():.3f} and "
                    f"{sigma_hat.max().item():.3f}")
    sigma_spread = sigma_hat.std().item()
    if not 0.04 < sigma_spread < 0.1:
        return fail(f"the per-unit scales should be spread like U(1, 1.25) (std 0.072) "
                    f"across units; their std is {sigma_spread:.3f}")
    s_std = (out[ones] - out[zeros]).std(0).median().item()
    want_s_std = (SAMPLE_STD ** 2 + 2 * (2 * SAMPLE_RANGE) ** 2 / 12) ** 0.5
    if not 0.8 * want_s_std < s_std < 1.2 * want_s_std:
        return fail(f"per sample, s ~ N(sigma, {SAMPLE_STD}) and m vary independently; the "
                    f"spread of output differences is {s_std:.3f}, expected about "
                    f"{want_s_std:.3f}")
    moved = (out2[zeros].mean(0) - mu_hat).abs().mean().item()
    if moved < 0.1:
        return fail(f"two calls gave nearly the same per-unit shifts (mean change {moved:.3f}): "
                    "draw mu and sigma afresh at every call")
    grad = a_grad.grad
    if grad is None or not torch.isfinite(grad).all():
        return fail("no finite gradient reached the input: build the output from a with "
                    "differentiable tensor operations")
    if abs(grad.mean().item() - sigma_mid) > 0.05:
        return fail(f"d out / d a should be s, averaging {sigma_mid}; got {grad.mean().item():.3f}")
    eval_err = (out_eval - sigma_mid * a).abs().max().item()
    if eval_err > 1e-12:
        return fail(f"in eval mode the layer should apply its expected transform "
                    f"{sigma_mid} * a; it is off by up to {eval_err:.3g}")
    return report(Verdict(name, True, "ranges, spreads, fresh draws, gradients, "
                           "eval mode"), verbose)
