"""Chapter 1, covariate shift: what the lessons on shifted inputs and on internal
covariate shift measure.

* ``shift``: a covariate-shift task (a fixed rule, moving inputs), a fitted
  logistic regression, and the saturation of a sigmoid unit in closed form.
* ``ics``: percentiles of a unit's input during training, their growth, and
  Santurkar et al.'s gradient-based measure of internal covariate shift.
* ``noise``: "noisy BN" (noise after every norm) and the per-step drift of a
  layer's input.
* ``landscape``: the loss and gradient along the gradient step.
"""
