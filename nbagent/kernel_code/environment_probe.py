# nbagent: report what a re-run of the notebook needs to know about this kernel, as one JSON line.
# Run silently after the setup cell; it is not part of the notebook.
def _nbagent_environment():
    import json
    import os
    import platform
    from importlib import metadata

    packages = {}
    for name in ("numpy", "pandas", "matplotlib", "scipy", "scikit-learn", "pillow", "ipykernel"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    policy = globals().get("_nbagent_random_seed")
    return json.dumps(
        {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "packages": packages,
            "random_seed": dict(policy) if isinstance(policy, dict) else None,
            "python_hash_seed": os.environ.get("PYTHONHASHSEED"),
        }
    )


print("nbagent-environment:", _nbagent_environment())
del _nbagent_environment
