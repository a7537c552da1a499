import json
import urllib.request

import pytest

pytestmark = pytest.mark.consul


def test_dev_agent_answers_kv(consul_agent, kv_prefix):
    req = urllib.request.Request(f"{consul_agent.url}/v1/kv/{kv_prefix}x", data=b"hello", method="PUT")
    assert urllib.request.urlopen(req, timeout=5).read().strip() == b"true"
    got = json.loads(urllib.request.urlopen(f"{consul_agent.url}/v1/kv/{kv_prefix}x", timeout=5).read())
    assert got[0]["Key"] == f"{kv_prefix}x"
