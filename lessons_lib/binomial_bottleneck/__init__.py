"""Lesson 04 · The binomial bottleneck: profiling, and faster dropout masks.

``reference.py`` holds the lesson's idea from scratch (fast mask generators, reading a profile: the file to open
after the notebook); ``fast_dropout.py`` the torch layer with those masks (and ``fused_dropout.cpp`` its compiled
kernel: the same masks drawn and multiplied in one pass); ``speed.py`` its race with
``F.dropout``; ``lab.py`` the experiments, panel and claims table; ``plots.py`` the figures;
``checks.py`` the checks of the learner's code.
"""
