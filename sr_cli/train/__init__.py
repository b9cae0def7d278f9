"""`sr train`: recipes, settings, data, losses, EMA, checkpoints and the training loop.

Core code only: nothing here prints or exits; progress goes through callbacks and failures
raise the typed errors of :mod:`sr_cli.errors`.
"""
