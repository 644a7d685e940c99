"""Lesson 00 · Tour: your hardware, honest timing, and the live panel.

``lab.py`` holds the timing demos, the panel's experiment, the claims table and the figure; ``checks.py`` the
checks of the questions, answered from the learner's own run. There is no ``reference.py``: the tour has no idea
to build from scratch (timing is done by the core ``lessons_lib.timing``, the hardware report by
``lessons_lib.device``).
"""
