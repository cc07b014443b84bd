"""Portier's load benchmark (see bench/README.md); a package so run.py can import its parts."""
