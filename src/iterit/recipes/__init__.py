"""One module per command, each with ``run(config) -> result``: what the CLI calls, and what tests and users call.

A recipe reads the inputs and writes the outputs of its command; the components it calls (``data``,
``scoring``, ``selection``, ``reselection``, ``evaluation``, ``report``) only compute. The CLI parses flags
and YAML into the command's config (:mod:`iterit.config`), calls ``run`` and prints ``result.format()``.
"""
