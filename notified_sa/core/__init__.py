"""The delivery decisions, with no threads and no I/O.

Everything here is plain objects and functions: which handlers an event still needs, what a job's outcome is,
when a retry falls due, which leases are held and what to give back at shutdown, when to claim and how many.
The threaded :class:`~notified_sa.Server` and the asyncio runtime own connections, waiting and concurrency and
call into this package for every decision, so a decision is written once. docs/architecture.md shows how the
parts fit together.
"""
