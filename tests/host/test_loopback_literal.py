"""http:// only to an exact loopback literal or "localhost" (review finding 4).

Strings like 127.0.0.09 matched the old pattern but are no IP literal for the
resolver (getaddrinfo looks them up in /etc/hosts or DNS, where they may name any
address). ipaddress decides now.
"""

import pytest

from jit_hooks.errors import ConfigError
from jit_hooks.host.login.config import parse_config


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.09:8080",
        "http://127.000.0.1",
        "http://0127.0.0.1",
        "http://127.1",
        "http://127.0.0.1.",
        "http://[::ffff:10.0.0.1]",
    ],
)
def test_almost_loopback_names_are_refused(url):
    with pytest.raises(ConfigError) as e:
        parse_config({"service": {"urls": [url]}}, path="/etc/jit-hooks/jit-hooks.toml")
    assert e.value.key == "service.urls" and "use https://" in str(e.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://127.255.0.9/p", "http://localhost:1", "http://[::1]"]
)
def test_loopback_literals_are_allowed(url):
    assert parse_config({"service": {"urls": [url]}}).urls == (url,)
