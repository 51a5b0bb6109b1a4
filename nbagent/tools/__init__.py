"""Tools: @tool and Tool, an agent's toolbox, the host bridge, managed agents, default tools, sharing."""
