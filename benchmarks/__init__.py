"""Benchmarks of notified-sa against PostgreSQL's own floor, the seed (notified 0.1.0) and pgqueuer.

Run ``python -m benchmarks --help``; benchmarks/README.md explains every scenario and every figure.

Layout:

* :mod:`benchmarks.cli`: the command line, the order of the runs, the exit code;
* :mod:`benchmarks.scenarios`: the five scenarios, each turning one run's timestamps into figures;
* :mod:`benchmarks.harness`: the clock, child processes and their pipe protocol, fresh databases;
* :mod:`benchmarks.systems`: one module per system under test (server, publisher, schema);
* :mod:`benchmarks.stats`, :mod:`benchmarks.machine`, :mod:`benchmarks.report`: figures, facts, output.
"""
