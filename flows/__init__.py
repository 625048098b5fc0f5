"""Prefect flows that compose the tasks in ``tasks/``.

Importing this package sets project-local defaults for Prefect and MLflow (see ``flows/_env.py``)
before either is imported; the library ``alcore`` itself never does this.
"""

from flows._env import configure as _configure

_configure()
