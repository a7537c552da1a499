"""How a followed job or operation rides out a lost control API (``cli_follow.reconnect_or_raise``,
shared by ``migrate`` and ``drain``/``balance``): pure logic, on a fake clock."""

from __future__ import annotations

import types

import grpc
import pytest

from sidecar.control import cli_follow
from sidecar.control.cli_client import EXIT_REFUSED, EXIT_UNREACHABLE, CliError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


class Unavailable(grpc.RpcError):
    pass


class Client:
    def error(self, exc: grpc.RpcError) -> CliError:
        return CliError("control API unavailable", EXIT_UNREACHABLE)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(cli_follow, "time", types.SimpleNamespace(monotonic=c.monotonic, sleep=c.sleep))
    return c


def lost(err: CliError) -> str:
    return f"lost it ({err})"


def test_a_refusal_is_raised_at_once(clock):
    refused = CliError("unknown job", EXIT_REFUSED)
    with pytest.raises(CliError) as info:
        cli_follow.reconnect_or_raise(Client(), refused, None, lost)
    assert info.value is refused and clock.slept == []


def test_unreachable_is_waited_out_until_the_window_closes(clock):
    give_up = cli_follow.reconnect_or_raise(Client(), Unavailable(), None, lost)
    assert give_up == 100.0 + cli_follow.FOLLOW_RECONNECT_S and clock.slept == [0.5]
    again = cli_follow.reconnect_or_raise(Client(), Unavailable(), give_up, lost)
    assert again == give_up                       # the window runs from the first loss
    clock.now = give_up + 0.1
    with pytest.raises(CliError) as info:
        cli_follow.reconnect_or_raise(Client(), Unavailable(), give_up, lost)
    assert info.value.code == EXIT_UNREACHABLE and str(info.value) == "lost it (control API unavailable)"
