"""Chapter 1, covariate shift: what the lessons on shifted inputs and on internal
covariate shift measure.

* ``shift``: a covariate-shift task (a fixed rule, moving inputs), a fitted
  logistic regression (optionally on sine features, optionally reweighted by
  importance weights), and the saturation of a sigmoid unit in closed form.
* ``ics``: percentiles of a unit's input during training, their growth and
  the shift of their medians, and Santurkar et al.'s gradient-based measure
  of internal covariate shift with the batch-to-batch noise it is read against.
* ``noise``: "noisy BN" (noise after every norm) and the per-step drift of a
  layer's input, of its batch mean and of each example.
* ``lp_norm``: batch normalization that divides by an l_p scale instead of the
  standard deviation.
* ``landscape``: the loss and gradient along the gradient step.
"""
