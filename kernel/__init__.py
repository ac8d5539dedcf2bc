"""What every part of Parley shares: settings, errors, logging, runtime, file helpers, statistics.

The bottom layer: it imports nothing else of the project (an import-linter contract
in ``make lint`` holds it to that), so gateway, streams, agents, infra and the CLI
can all depend on it.
"""
