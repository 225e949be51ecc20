# W5: W1 with a Python `def` action (issue 4's API).
from eddy import Agent, action, InputEvent, OutputEvent


class EchoAgent(Agent):
    @action(InputEvent)
    @staticmethod
    def echo(event, ctx):
        ctx.send_event(OutputEvent(output=event.input))
