# nbagent tools: the packages the tools below declare are checked first, so a missing one is
# reported by name before anything else runs.
class MissingToolRequirements(ImportError):
    """A tool needs a package that is not installed in this kernel's Python."""


def _nbagent_check_requirements(needs):
    """``needs``: tool name -> requirement strings ("pandas>=2", "sqlalchemy", "sqlite3")."""
    import importlib.util
    import re
    import sys
    from importlib import metadata

    problems, wanted = [], []
    for tool, requirements in needs.items():
        for requirement in requirements:
            name = re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]
            try:
                installed = metadata.version(name)
            except metadata.PackageNotFoundError:
                if importlib.util.find_spec(name.replace("-", "_")) is not None:
                    continue  # a module of the standard library or of a plain folder
                problems.append(f"{requirement!r} for tool {tool!r} is not installed")
                wanted.append(requirement)
                continue
            try:
                from packaging.requirements import Requirement

                specifier = Requirement(requirement).specifier
            except Exception:
                continue  # no packaging module, or no version condition to check
            if specifier and not specifier.contains(installed, prereleases=True):
                problems.append(f"{requirement!r} for tool {tool!r}: version {installed} is installed")
                wanted.append(requirement)
    if problems:
        quoted = " ".join(f"'{r}'" for r in wanted)
        raise MissingToolRequirements(
            f"{'; '.join(problems)} (Python: {sys.executable}). "
            f"Install with: {sys.executable} -m pip install {quoted}"
        )
