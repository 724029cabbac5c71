"""Chapter 3, BN at inference (the running-statistics conventions themselves are
``bnlessons.running_stats``, in the core, since the reference BN uses them).

* ``bn_modes``: training versus eval mode, BN layers and buffers, a small
  CNN, and swapping BN layers (e.g. for ``FrozenBatchNorm2d``).
* ``precise_bn``: population statistics recomputed with the final weights,
  and extra exponential moving averages (optionally bias-corrected).
* ``small_batch``: ghost BN, Batch Renormalization, and the small-batch MLP.
* ``deploy``: folding BN into the layer before it, shifted test data, AdaBN.
"""
