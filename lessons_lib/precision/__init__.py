"""Lesson 07 · Precision: fp64, fp32, bf16, fp16.

``reference.py`` holds the lesson's idea from scratch (the file to open after the notebook): neighbours in a
format, stochastic rounding, counting lost updates, dynamic loss scaling. ``checks.py`` checks the learner's code.
The apparatus: ``formats.py`` (the formats, what this machine runs, matmul speed), ``train.py`` (one training run
in a precision, with its callbacks: the panel's run), ``lab.py`` (the panel, the epoch timing, the comparison over
seeds, the claims table), ``replicates.py`` (one recipe trained for several seeds at once), ``hypotheses.py`` (the
lost-update survey, the stochastic-rounding rescue, fp16 underflow, the chaos comparison), ``plots.py`` (the
figures).
"""
