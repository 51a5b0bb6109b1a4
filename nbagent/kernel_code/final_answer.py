# nbagent setup: final_answer(), seeded random generators, and re-runs that go on past the steps that
# failed during the run. Re-running this notebook needs IPython, not nbagent.
def final_answer(answer):
    """Give `answer` as the result of the task: shown below, and again in the answer cell."""
    from IPython import get_ipython
    from IPython.display import display

    final_answer.value, shell = answer, get_ipython()
    shown = answer.figure if hasattr(answer, "get_figure") else answer  # an Axes: show its figure
    bundle, metadata = shell.display_formatter.format(shown) if shell else ({"text/plain": repr(shown)}, {})
    if isinstance(answer, str):
        bundle = {"text/plain": answer, "text/markdown": answer}
    for hand_over in final_answer.hand_over:  # in an nbagent run: the agent takes the value here
        bundle, metadata = hand_over(answer, bundle, metadata)
    display(bundle, raw=True, metadata=metadata)
    if hasattr(shown, "savefig"):  # a figure is shown once, as the answer, not again by the backend
        __import__("matplotlib.pyplot").pyplot.close(shown)


final_answer.value, final_answer.hand_over = None, []
