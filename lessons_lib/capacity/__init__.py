"""Lesson 01 · Capacity: underfitting, overfitting, and what a network can memorize.

``reference.py`` holds the lesson's idea from scratch (the file to open after the notebook); ``lab.py``
the experiments, panel and claims table; ``checks.py`` the checks of the learner's code.
"""
