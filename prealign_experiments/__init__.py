"""Experiments built on the megatron_prealign library, using only its public API.

`english_clone`: the English-Clone benchmark (a cloned second language, a bilingual dictionary,
knowledge and transfer probes) and its demo, ``python -m prealign_experiments.english_clone``.
"""
