"""Lesson 04 · The binomial bottleneck: profiling, and faster dropout masks.

``reference.py`` holds the lesson's idea from scratch (fast mask generators, ``FastDropout``, reading a profile:
the file to open after the notebook); ``lab.py`` the experiments, panel and claims table; ``plots.py`` the figures;
``checks.py`` the checks of the learner's code.
"""
