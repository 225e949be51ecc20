"""Actions that are callable objects, which the @action decorator cannot see
into: one returns an async generator, one a generator, one a generator-based
coroutine (@types.coroutine), which is run. The record's "op" says which."""
import types

from eddy import Agent, Event, InputEvent, OutputEvent, action


class ByAsyncGen(Event):
    pass


class ByGen(Event):
    pass


class ByGenCoroutine(Event):
    pass


async def _async_gen(event, ctx):
    ctx.send_event(OutputEvent(output={"ran": "async generator"}))
    yield


def _gen(event, ctx):
    ctx.send_event(OutputEvent(output={"ran": "generator"}))
    yield


@types.coroutine
def _gen_coroutine(event, ctx):
    v = yield from ctx.execute_async(len, "abc")
    ctx.send_event(OutputEvent(output={"ran": "generator-based coroutine", "v": v}))


class Returns:
    def __init__(self, name, fn):
        self.__name__ = name
        self._fn = fn

    def __call__(self, event, ctx):
        return self._fn(event, ctx)


async_gen_action = action(ByAsyncGen)(Returns("async_gen_action", _async_gen))
gen_action = action(ByGen)(Returns("gen_action", _gen))
gen_coroutine_action = action(ByGenCoroutine)(Returns("gen_coroutine_action", _gen_coroutine))


class ObjectAgent(Agent):
    @action(InputEvent)
    @staticmethod
    def route(event, ctx):
        op = event.input["op"]
        events = {"async_gen": ByAsyncGen, "gen": ByGen, "gen_coroutine": ByGenCoroutine}
        ctx.send_event(events[op]())
