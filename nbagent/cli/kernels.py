"""``nbagent kernels``: list the kernel specs nbagent can run code in."""

from __future__ import annotations

import argparse

from .exit_codes import EXIT_OK


def add_kernels_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``kernels`` command."""
    sub.add_parser("kernels", help="list the kernels nbagent can run code in")


def kernels_command(args: argparse.Namespace) -> int:
    """``nbagent kernels``: one line a kernel spec: name, display name, folder."""
    from ..execution.kernel import available_kernels, kernel_spec_manager

    ksm = kernel_spec_manager()
    for name in available_kernels():
        spec = ksm.get_kernel_spec(name)
        print(f"{name:20} {spec.display_name}  ({spec.resource_dir})")
    return EXIT_OK
