"""The ``flowmatch`` command-line interface."""
