"""Two Agent subclasses: the command must choose one with --agent."""
from eddy import Agent, InputEvent, OutputEvent, action


class First(Agent):
    @action(InputEvent)
    @staticmethod
    def one(event, ctx):
        ctx.send_event(OutputEvent(output={"agent": "First", "key": event.input["key"]}))


class Second(Agent):
    @action(InputEvent)
    @staticmethod
    def two(event, ctx):
        ctx.send_event(OutputEvent(output={"agent": "Second", "key": event.input["key"]}))
