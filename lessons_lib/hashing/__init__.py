"""Lesson 09 · Randomized hashing.

``reference.py`` holds the lesson's idea from scratch (SimHash, the bucket lookup, a layer that computes only the
units it picks: the file to open after the notebook). Beside it: ``scratch.py`` (collision rates and the numpy
network trained with the learner's functions), ``layer.py`` (the PyTorch sampled hidden layer and its
multiplication counts), ``paper_regime.py`` (training in the paper's regime: sparse updates, a rebuild schedule,
the equal-compute dense baseline), ``wide_output.py`` (a wide output layer sampled by LSH, SLIDE's regime),
``crossover.py`` (wall time against width: where hashing could win), ``analysis.py`` (overlaps, batch unions, step
timings); ``lab.py`` the experiments, panel and claims table; ``plots.py`` the figures; ``checks.py`` the checks
of the learner's code.
"""
