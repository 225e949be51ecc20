"""No Agent subclass and no action: loading fails."""
from eddy import Event


class Lonely(Event):
    pass
