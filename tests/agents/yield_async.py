"""An async def action with yield (an async generator function): refused
when the file loads, since eddy would never run its body."""
from eddy import Agent, InputEvent, OutputEvent, action


class YieldingAgent(Agent):
    @action(InputEvent)
    @staticmethod
    async def streams(event, ctx):
        ctx.send_event(OutputEvent(output=event.input))
        yield
