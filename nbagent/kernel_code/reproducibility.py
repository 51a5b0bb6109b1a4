_nbagent_random_seed = {"seed": 0, "seeded": ["random"]}  # a re-run draws the same random numbers
__import__("random").seed(_nbagent_random_seed["seed"])
try:
    __import__("numpy").random.seed(_nbagent_random_seed["seed"])
    _nbagent_random_seed["seeded"].append("numpy.random")
except ImportError:
    pass
