"""Chapter 4, placement: where BN goes in a network, what it does with dropout, and
where it does not belong.

* ``positions``: BN before or after the nonlinearity, in an MLP and a small
  CNN with one initialisation rule, what each nonlinearity then sees, and
  two controls for a sigmoid network (a larger initialisation, centred
  outputs).
* ``dropout``: the variance shift of dropout before BN (Li et al. 2019): the
  closed form for one value and for a weighted sum, a Monte Carlo check,
  networks with dropout in different places, and the shift measured inside
  them.
* ``regularisation``: temperature scaling, to separate a test loss's
  confidence from its errors, and BN with the training set's statistics (BN
  without batch noise).
* ``residual_blocks``: post- and pre-activation residual designs with one
  head, and the signals at initialisation block by block.
* ``sequences``: normalisations in a causal model, the leakage they cause,
  and padding.
"""
