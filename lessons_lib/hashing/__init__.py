"""Lesson 09 · Randomized hashing.

``reference.py`` holds the lesson's idea from scratch (SimHash, the bucket lookup, a layer that computes only the
units it picks: the file to open after the notebook); ``lab.py`` the experiments, the PyTorch sampled layer, the
panel and the claims table; ``plots.py`` the figures; ``checks.py`` the checks of the learner's code.
"""
