"""Reinforcement-learning helpers: a gymnasium reward wrapper and a synthetic reach environment.

Both need gymnasium (in requirements.txt); nothing else in the package imports this subpackage, so the
nodes start without it.
"""
