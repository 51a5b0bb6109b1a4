"""The agent: the loop, its memory, reading replies, observations, planning, restoring a run."""
