"""Notifications ([track] webhook = URL): each notice (arrl.track.notices) is POSTed as a Slack-compatible JSON
body, `{"text": "...", "arrl": {"run": ..., "key": ..., "kind": ...}}`, which Slack's and Discord's
(`/slack` suffix) incoming webhooks and Mattermost take as they are. A write has a bounded timeout
(`[track] timeout_s`); a webhook that is down, refuses or hangs is tried again later by the outbox, and the
loop goes on. It cannot be asked what it received, so the ledger's record is trusted (arrl.track.outbox).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlparse

from arrl.track.items import Item


def check(url: str) -> str | None:
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        return f"{url!r} is not an http(s) URL"
    return None


class WebhookError(Exception):
    """The webhook did not take a notice; the message says why."""


class WebhookSink:
    name = "webhook"
    kinds = ("notice",)

    def __init__(self, url: str, run: str, timeout_s: float):
        self.url, self.run, self.timeout_s = url, run, timeout_s

    def open(self, items: list[Item]):
        return None  # it cannot say what it holds: the ledger's record stands

    def send(self, it: Item) -> None:
        body = json.dumps({"text": it.text, "arrl": {"run": self.run, "key": it.key,
                                                     "kind": it.key.split(":")[1]}}).encode()
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "arrl"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                r.read(1024)
        except urllib.error.HTTPError as e:
            raise WebhookError(f"{self.url} answered {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:  # refused, unreachable, timed out
            raise WebhookError(f"{self.url}: {getattr(e, 'reason', e)}") from None

    def close(self, finished: bool) -> None:
        pass
