"""Lesson 08 · Data bigger than memory.

``reference.py`` holds the lesson's idea from scratch (the memory-mapped ``Dataset`` and the block-shuffle
sampler: the file to open after the notebook); ``lab.py`` the data paths, the capped run, the panel and claims
table; ``measure.py`` the evidence (rounds of throughput and memory, a cold page cache, paired seeds of the
samplers with the class-sorted control, the naive path at full size); ``pagecache.py`` dropping a file from the
page cache and checking it; ``formats.py`` the storage-format study and the naive path; ``plots.py`` the
figures; ``checks.py`` the checks of the learner's code and answers. Core modules it stands on: ``letters``
(the set), ``memcap`` (peak RSS, the memory-capped child), ``multiseed`` (stacked seeds), ``stats`` (intervals,
verdicts), ``downloads`` (optional real data).
"""
