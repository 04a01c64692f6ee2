"""Integrations of hermetic with training frameworks.

Each integration is a submodule that imports its framework when it is itself
imported, never before: ``import hermetic`` and ``import
hermetic.integrations`` import no framework.

- :mod:`hermetic.integrations.lightning`: a Lightning ``CheckpointIO`` that
  writes whole training checkpoints in hermetic's format, and a
  ``load_from_checkpoint`` that never unpickles.
"""
