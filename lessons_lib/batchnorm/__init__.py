"""Lesson 05 · Batch normalization.

``reference.py`` holds the lesson's idea from scratch (the numpy forward/backward pair and the MLP where the
layer sits: the file to open after the notebook); ``lab.py`` the experiments, panel and claims table;
``plots.py`` their figures; ``checks.py`` the checks of the learner's code and answers.
"""
