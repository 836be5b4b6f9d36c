"""Where the trials of a search run: ``local`` lives in :mod:`nas.search`; ``ray`` in :mod:`nas.backends.ray`.

Every backend writes the same study (DESIGN decision 1), so resume, dedup, the budget and
every controller behave the same whichever runs the trials.
"""
__all__: list[str] = []
