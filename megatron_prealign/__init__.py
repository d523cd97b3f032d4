"""megatron_prealign: PreAlign (alignment before pretraining + input-only code-switching) on megatron-core.

Importing the package has no side effects: no CUDA calls, no process groups, no compilation.
"""

__version__ = "0.1.0"
