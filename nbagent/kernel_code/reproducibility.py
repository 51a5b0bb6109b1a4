# nbagent setup: seed the global random generators, so a re-run of this notebook draws the same
# numbers. Generators made without a seed (numpy.random.default_rng(), random.Random()) are not
# covered: their numbers differ on every run.
_nbagent_random_seed = {"seed": 0, "seeded": ["random"]}


def _nbagent_seed_generators(policy):
    import random

    random.seed(policy["seed"])
    try:
        import numpy
    except ImportError:
        return
    numpy.random.seed(policy["seed"])
    policy["seeded"].append("numpy.random")


_nbagent_seed_generators(_nbagent_random_seed)
del _nbagent_seed_generators
