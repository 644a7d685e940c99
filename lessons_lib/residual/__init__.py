"""Lesson 06 · Residual blocks.

``reference.py`` holds the lesson's idea from scratch (the block's forward, the blocks and nets it runs in, the
per-layer gradient norms: the file to open after the notebook); ``lab.py`` the experiments, panel and claims
table; ``plots.py`` their figures; ``checks.py`` the checks of the learner's code and answers.
"""
