"""Sampling: sigma grids, flow-matching solvers and the scanned sampling loop."""
