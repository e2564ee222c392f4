"""Interventions: one module per intervention, each with its transform (see `base.py` for the
hooks, `cosjax.plan` for the order, `cosjax.transforms` for the public transforms).

Deliberately empty: `cosjax.plan` imports `base.py` and the intervention modules import the sampler
types, so importing them all here would make a cycle.
"""
