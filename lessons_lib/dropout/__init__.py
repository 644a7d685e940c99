"""Lesson 03 · Dropout: from scratch, in PyTorch, and what it costs.

``reference.py`` holds the lesson's idea from scratch (the file to open after the notebook); ``lab.py``
the experiments, panel and claims table; ``checks.py`` the checks of the learner's code.
"""
