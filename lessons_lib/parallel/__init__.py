"""Lesson 10 · Parallel training.

``reference.py`` holds the lesson's idea from scratch (the file to open after the notebook): averaging gradients
with ``all_reduce``, a hand-made data-parallel process, Hogwild's shared parameters. ``lab.py`` the experiments
(DDP, hand-made, Hogwild), sweeps, panel and claims table; ``plots.py`` the figure; ``checks.py`` the checks of the
learner's code and answers. Starting and watching the processes is core: ``lessons_lib/processes.py``.
"""
