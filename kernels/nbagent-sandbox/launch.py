"""Launcher of the nbagent-sandbox kernel: runs nbagent/execution/sandbox.py's main(), which execs the kernel.

The module is loaded from its file rather than imported as ``nbagent.sandbox``: importing the
``nbagent`` package would load the whole agent (a quarter of a second) for nothing, on every
kernel start and restart. ``python -m nbagent.execution.sandbox ARGS`` does the same, only slower.
"""

import importlib.util
import os
import sys

package = importlib.util.find_spec("nbagent")  # finds the package without running its __init__
if package is None or not package.submodule_search_locations:
    sys.exit("nbagent-sandbox: the nbagent package is not installed in " + sys.executable)
path = os.path.join(next(iter(package.submodule_search_locations)), "execution", "sandbox.py")
spec = importlib.util.spec_from_file_location("_nbagent_sandbox", path)
assert spec is not None and spec.loader is not None
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module  # dataclasses look their module up there
spec.loader.exec_module(module)
module.main(sys.argv[1:])
