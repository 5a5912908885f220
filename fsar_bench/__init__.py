"""fsar-bench: one seeded 10,000-episode protocol for every few-shot action recognition method.

Usage::

    fsar-bench run otam --dataset synthetic --shots 1,5
    fsar-bench report
"""

__version__ = "0.1.0"
