"""Lesson 07 · Precision: fp64, fp32, bf16, fp16.

``reference.py`` holds the lesson's idea from scratch (the file to open after the notebook): neighbours in a
format, stochastic rounding, counting lost updates, dynamic loss scaling. ``checks.py`` checks the learner's code.
The apparatus: ``formats.py`` (the formats, what this machine runs, matmul speed), ``lab.py`` (training in each
precision, the panel, the claims table), ``hypotheses.py`` (the lost-update survey, the stochastic-rounding
rescue, fp16 underflow, the chaos experiment), ``plots.py`` (the figures).
"""
