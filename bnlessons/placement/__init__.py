"""Chapter 4, placement: where BN goes in a network, what it does with dropout, and
where it does not belong.

* ``positions``: BN before or after the nonlinearity, in an MLP and a small
  CNN, and what each nonlinearity then sees.
* ``dropout``: the variance shift of dropout before BN (Li et al. 2019): the
  closed form, a Monte Carlo check, networks with dropout in different
  places, and the shift measured inside them.
* ``sequences``: BN over (batch, time) in a causal model, the leakage it
  causes, and padding.
"""
