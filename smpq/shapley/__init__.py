"""Shapley values of the bit-width candidates (SPEC §3.3), one module per concept; import from them:

- ``sampling``: seeded orderings, chunks of a run and their merge, memoised coalition values;
- ``owen``: Owen values over the (layer, kind) groups, exact inside each group; ``within_group``;
- ``permutation``: global permutation sampling (Castro et al. 2009; Shapley-NAS truncation);
- ``exact``: enumeration (the ``exact`` estimator, and the Shapley/Owen references of the tests);
- ``estimate``: means, standard errors, stopping rule, chunked runs (``shapley_values``, ``sample_units``);
- ``game``: the coalition game on a trained, frozen supernet.

A game is any ``value_fn(mask)`` over boolean player masks returning a value or one value per sample.
The allowed option values are defined once, in ``smpq.config``.
"""
