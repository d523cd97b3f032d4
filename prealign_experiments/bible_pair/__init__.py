"""The English–Spanish Bible benchmark: a real language pair read from Debian packages at run
time (SWORD Bible modules, the FreeDict dictionary), its evaluation suite, and the comparison of
training arms on it (see README.md in this folder). ``python -m prealign_experiments.bible_pair``
runs it.
"""
