"""The ``femurseg`` command line: one module per sub-command, each thin (parse, call the library, print)."""
