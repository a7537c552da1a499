"""The one rule for following a Consul blocking query's index.

Each answer carries ``X-Consul-Index``; the next query waits for a change
after it. An index that went backwards (a store restarted without its data, a
snapshot restore) or one below 1 means nothing known about the old positions
holds: start over at 0, which answers at once (Consul's documented reset
rule). The replica, the participant's key watch and the controller's job
watch all follow it through ``next_blocking_index``.
"""

from __future__ import annotations


def next_blocking_index(last: int, answered: int) -> int:
    """The index for the next blocking query after an answer at ``answered``
    when the previous one was ``last``: ``answered``, or 0 (reset) when it went
    backwards or is not positive."""
    return answered if answered >= last and answered > 0 else 0
