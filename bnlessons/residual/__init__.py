"""Chapter 5, residual networks: why BN makes deep residual networks trainable,
and what else does.

* ``propagation``: signal propagation through a stack of residual blocks at
  initialisation (variances of the skip path and the branches, gradient
  norms per block).
* ``variants``: the residual MLPs compared in the chapter, built and trained
  by name (no normalisation, SkipInit, BN, BN with a zero gamma, Fixup).
* ``fixup``: Fixup's initialisation rules and its residual MLP.
"""
