"""The wire format shared with awaitly 1.35: JSON text, and the documents rows hold.

Everything that turns a stored row into Python, or Python into a row, is in
this package; the store, the persistence layer, the runner and the CLI call it.
"""
