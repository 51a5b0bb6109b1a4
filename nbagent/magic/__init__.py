"""``%%agent``: the magic (magics.py) and the description of the user's namespace (namespace.py)."""
