"""A def action with yield (a generator function): refused when the file
loads."""
from eddy import InputEvent, OutputEvent, action


@action(InputEvent)
def produces(event, ctx):
    ctx.send_event(OutputEvent(output=event.input))
    yield
