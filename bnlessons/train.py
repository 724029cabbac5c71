"""A small, seeded training loop that keeps a history.

Every random draw of a run follows from its ``seed``: ``train`` draws the
minibatches from its own generator, and runs the forward passes (dropout
masks, injected noise) and the ``record`` calls inside
``reproducibility.seeded`` with a seed derived from ``seed``, so two runs
with the same seed are identical whatever ran before them, and the
caller's global random state is the same afterwards. It evaluates on
the test split at chosen steps in eval mode, calls an optional ``record``
function at those steps (for per-layer statistics from forward hooks), and
stops early if the loss stops being finite.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bnlessons._own_work import answers
from bnlessons._validate import (
    check_fraction,
    check_int,
    check_module,
    check_nonnegative,
    check_positive,
)
from bnlessons.data import Dataset, batches
from bnlessons.progress import progress_bar
from bnlessons.reproducibility import derive_seed, seeded

Recorder = Callable[[nn.Module, int], dict]


@dataclass
class History:
    """What happened during training, indexed by step (step 0 is before any update)."""

    steps: list[int] = field(default_factory=list)  # steps at which we evaluated
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # one per update
    records: dict[str, list] = field(default_factory=dict)  # record(model, step) at eval steps
    diverged_at: Optional[int] = None  # first step whose loss was not finite

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def final_acc(self) -> float:
        """The test accuracy at the end of training; NaN if the run diverged (its
        last evaluation came before the blow-up and would hide it) or was never
        evaluated."""
        if self.diverged or not self.test_acc:
            return float("nan")
        return self.test_acc[-1]

    def final_loss(self, last: int) -> float:
        """The mean training loss over the last ``last`` updates; inf if the run diverged.

        The loss of single minibatches is noisy; the mean over the last few
        updates is the usual measure of where training ended. A diverged run
        gets inf, so that it compares worse than any run that trained.
        """
        check_int(last, "last")
        if self.diverged:
            return math.inf
        if len(self.train_loss) < last:
            raise ValueError(f"last={last} is more than the {len(self.train_loss)} updates "
                             "recorded")
        tail = self.train_loss[-last:]
        return sum(tail) / len(tail)

    def trained(self, min_accuracy: float) -> bool:
        """Did this run train? Its loss stayed finite and its final test accuracy
        reached ``min_accuracy``. The one rule the lessons and ``lr_sweep`` use."""
        check_fraction(min_accuracy, "min_accuracy")
        return not self.diverged and self.final_acc >= min_accuracy

    def first_step_reaching(self, accuracy: float) -> Optional[int]:
        """The first evaluated step with test accuracy >= ``accuracy``, or None."""
        for step, acc in zip(self.steps, self.test_acc):
            if acc >= accuracy:
                return step
        return None


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the body with ``model`` in eval mode, then give every submodule its own mode back.

    Each submodule's mode is saved and restored separately, so a model whose
    parts were in different modes (say, BN layers frozen in eval mode inside
    a model in training mode) comes back exactly as it was, also when the
    body raises. Inside, individual layers may be switched on purpose (e.g.
    BN layers to training mode to recompute their statistics).
    """
    check_module(model, "model")
    saved = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, training in saved:
            module.training = training


@torch.no_grad()
@answers("check_evaluate")
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode; the model's modes are restored."""
    total_loss, correct = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(y), batch_size):
            logits = model(x[start:start + batch_size])
            target = y[start:start + batch_size]
            total_loss += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(dim=1) == target).sum())
    return total_loss / len(y), correct / len(y)


def make_optimizer(model: nn.Module, name: str, lr: float, momentum: float,
                   weight_decay: float, decay_only: Optional[Sequence[str]] = None,
                   param_lrs: Optional[Mapping[str, float]] = None) -> torch.optim.Optimizer:
    """SGD (with ``momentum``) or Adam over the model's parameters.

    ``decay_only`` names the parameters (as in ``model.named_parameters()``)
    that get ``weight_decay``; the others get none. ``None`` decays all.
    ``param_lrs`` maps parameter names to their own learning rates; the
    others get ``lr``. Each group's rate is kept as its ``"base_lr"``.
    """
    check_positive(lr, "lr")
    if name not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")
    named = dict(model.named_parameters())
    if decay_only is None:
        decayed = set(named)
    else:
        if isinstance(decay_only, str):
            raise TypeError("decay_only must be a sequence of parameter names, not one string")
        unknown = [n for n in decay_only if n not in named]
        if unknown:
            raise ValueError(f"decay_only names no parameter of the model: {unknown}; "
                             f"the names are those of model.named_parameters()")
        decayed = set(decay_only)
    own = {}
    if param_lrs is not None:
        if not isinstance(param_lrs, Mapping):
            raise TypeError(f"param_lrs must map parameter names to learning rates, got "
                            f"{type(param_lrs).__name__}")
        unknown = [n for n in param_lrs if n not in named]
        if unknown:
            raise ValueError(f"param_lrs names no parameter of the model: {unknown}; "
                             f"the names are those of model.named_parameters()")
        for n, value in param_lrs.items():
            own[n] = check_positive(value, f"param_lrs[{n!r}]")
    groups: dict[tuple[float, float], list] = {}
    for n, p in named.items():
        key = (own.get(n, float(lr)), weight_decay if n in decayed else 0.0)
        groups.setdefault(key, []).append(p)
    param_groups = [{"params": params, "lr": rate, "base_lr": rate, "weight_decay": decay}
                    for (rate, decay), params in groups.items()]
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum)
    return torch.optim.Adam(param_groups, lr=lr)


def eval_steps(steps: int, eval_every: int) -> set[int]:
    check_int(eval_every, "eval_every", 1)
    return set(range(0, steps + 1, eval_every)) | {steps}


def train(model: nn.Module, data: Dataset, steps: int, lr: float, batch_size: int = 64,
          optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0,
          seed: int = 0, eval_every: int = 100, record: Optional[Recorder] = None,
          progress: bool = True, desc: str = "train", replacement: bool = False,
          decay_only: Optional[Sequence[str]] = None,
          lr_schedule: Optional[Callable[[int], float]] = None,
          param_lrs: Optional[Mapping[str, float]] = None,
          after_step: Optional[Callable[[nn.Module, int], None]] = None) -> History:
    """Train ``model`` on ``data`` for ``steps`` updates with cross-entropy loss.

    Evaluates test loss and accuracy at step 0, every ``eval_every`` steps and at
    the end. ``record(model, step)`` may return a dict; its values are appended
    to ``history.records``. Training stops at the first non-finite loss.
    Minibatches come from ``data.batches``: shuffled epochs, or with
    ``replacement=True`` independent uniform draws. Draws inside the model
    (dropout, noise layers) and in ``record`` come from torch's global
    generator seeded with ``derive_seed(seed, "forward")`` for the length of
    the run, and the caller's global random state is restored afterwards. Parameters with
    ``requires_grad=False`` get no gradient and so are not updated, which is
    how a part of the model is frozen. ``decay_only`` restricts weight decay
    to the named parameters, and ``param_lrs`` gives named parameters their
    own learning rates (see ``make_optimizer``). ``lr_schedule(step)``, for
    step = 1 .. ``steps``, is the factor every learning rate is multiplied by
    for that step's update (``None``: constant rates); it must return a
    finite number >= 0, else ``ValueError``. ``after_step(model, step)`` runs
    after each update, without gradients (to project weights, say).
    """
    check_int(steps, "steps", 0)
    for fn, label in ((lr_schedule, "lr_schedule"), (after_step, "after_step")):
        if fn is not None and not callable(fn):
            raise TypeError(f"{label} must be a function, got {type(fn).__name__}")
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay, decay_only, param_lrs)
    generator = torch.Generator().manual_seed(seed)
    stream = batches(data.x_train, data.y_train, batch_size, generator,
                     replacement=replacement)
    checkpoints = eval_steps(steps, eval_every)
    history = History()

    def checkpoint(step: int) -> None:
        loss, acc = evaluate(model, data.x_test, data.y_test)
        history.steps.append(step)
        history.test_loss.append(loss)
        history.test_acc.append(acc)
        if record is not None:
            for key, value in record(model, step).items():
                history.records.setdefault(key, []).append(value)

    with seeded(derive_seed(seed, "forward")), \
            progress_bar(steps, desc, enabled=progress) as bar:
        model.train()
        checkpoint(0)
        for step in range(1, steps + 1):
            xb, yb = next(stream)
            loss = F.cross_entropy(model(xb), yb)
            if not math.isfinite(loss.item()):
                history.diverged_at = step
                bar.update(steps - step + 1)
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if lr_schedule is not None:
                factor = check_nonnegative(lr_schedule(step), f"lr_schedule({step})")
                for group in opt.param_groups:
                    group["lr"] = group["base_lr"] * factor
            opt.step()
            if after_step is not None:
                with torch.no_grad():
                    after_step(model, step)
            history.train_loss.append(loss.item())
            if step in checkpoints:
                checkpoint(step)
            bar.update(1)
    return history
