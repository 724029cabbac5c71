"""Chapter 2, the mathematics of BN (the reference implementation itself is
``bnlessons.reference``, in the core).

* ``gradcheck``: the computational graph's gradients node by node with
  autograd, central finite differences, and ``relative_error``.
* ``diagrams``: small computational-graph drawings.
* ``scale_invariance``: BN after a linear layer, scaled weights, row norms and
  the effective learning rate.
* ``timing``: honest timings of the backward-pass implementations.
* ``jacobian``: BN's Jacobian over one feature (formula, autograd, projection
  report) and the per-example Jacobians between the layers of an MLP.
"""
