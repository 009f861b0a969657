"""Thin command-line entry points: parse -> call a library function -> print."""
