"""Running code: the Execution record, the kernel and in-shell executors, the sandbox, pools, forks."""
