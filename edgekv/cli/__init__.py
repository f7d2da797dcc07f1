"""The `edgekv` command line."""
