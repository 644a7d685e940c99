"""Lesson 03 · Dropout: from scratch, in PyTorch, and what it costs.

``reference.py`` holds the lesson's idea from scratch (inverted dropout forward/backward in numpy, its gradient check,
a numpy MLP that uses it: the file to open after the notebook); ``lab.py`` the experiments, panel and claims table;
``plots.py`` the figures; ``checks.py`` the checks of the learner's code.
"""
