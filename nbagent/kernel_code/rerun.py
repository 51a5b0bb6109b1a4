def _nbagent_go_past_failures(lines, mark="# nbagent: failed during the run"):
    if not lines or not lines[0].startswith(mark):  # only steps that failed during the run are marked
        return lines
    step = repr("".join(lines))  # re-run, such a step prints its error and the notebook goes on
    return [
        f"try:\n    exec(compile({step}, 'failed-step', 'exec'))\n",
        "except Exception:\n    __import__('traceback').print_exc()\n",
    ]


# (outside IPython there is no shell to transform cells: the list appended to is thrown away)
getattr(__import__("IPython").get_ipython(), "input_transformers_post", []).append(_nbagent_go_past_failures)
