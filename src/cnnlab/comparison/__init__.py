"""Experiments that train several runs and compare them (beside evaluate; uses train)."""
