"""Does not import: raises while loading."""
from eddy import Agent

raise ImportError("this agent is broken on purpose")
