"""Lesson 08 · Data bigger than memory.

``reference.py`` holds the lesson's idea from scratch (the memory-mapped ``Dataset`` and the block-shuffle
sampler: the file to open after the notebook); ``lab.py`` the streaming comparison, the capped run, the panel and
claims table; ``formats.py`` the storage-format study and the naive path; ``plots.py`` the figures;
``checks.py`` the checks of the learner's code and answers. Core modules it stands on: ``letters`` (the set),
``memcap`` (peak RSS, the memory-capped child), ``downloads`` (optional real data).
"""
