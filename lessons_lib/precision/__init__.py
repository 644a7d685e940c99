"""Lesson 07 · Precision: fp64, fp32, bf16, fp16.

``reference.py`` holds the lesson's idea from scratch (the file to open after the notebook); ``lab.py``
the experiments, panel and claims table; ``checks.py`` the checks of the learner's code.
"""
