"""The cluster file: what it holds and how it is read.

- :mod:`edgekv.config.model`: the frozen dataclasses (``ClusterConfig``,
  ``NodeSpec``, ``Region`` and the ``*Settings`` sections) and the naming rule.
- :mod:`edgekv.config.loader`: ``load_config`` (a file) and ``parse_config``
  (a loaded YAML document), the only importers of PyYAML.
- :mod:`edgekv.config.sections`: one parser per section of the file.
- :mod:`edgekv.config.values`: checks of single values and ``parse_host_port``.

This package imports nothing itself, so importing the model never pulls in
PyYAML or the loader.
"""
