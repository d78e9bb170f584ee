"""Alert bodies and the delivery ledger's bounds, on real SQLite files (no master needed)."""
from __future__ import annotations

import json
import time

import pytest

from zmqgrid.alerts import templates
from zmqgrid.alerts.delivery import MAX_BACKLOG, Settings, retry_after
from zmqgrid.errors import UsageError
from zmqgrid.store import alert_store
from zmqgrid.store.alert_store import DeliveryLedger
from zmqgrid.store.task_store import TaskStore

HOSTILE = {"id": "t-1", "name": "crawl\x1b[2J\u202e" + "x" * 500, "attempt": 2, "device_id": "w\n1",
           "exit_code": 1, "error": {"type": "ValueError", "message": "line one\nline two" + "y" * 5000},
           "reason": None}


def test_each_chat_template_has_its_services_shape_and_peer_text_is_printable_and_bounded():
    event = dict(templates.task_event("r", "failed", HOSTILE, time.time()), seq=7)
    text = event["text"]
    assert text.isprintable() and len(text) <= templates.TEXT_CHARS
    assert "\\x1b[2J\\u202e" in text and "\\x0aline two" in text
    assert len(event["task"]["name"]) <= templates.NAME_CHARS and len(event["task"]["error"]) <= templates.ERROR_CHARS
    shapes = {name: json.loads(templates.render(name, event)) for name in templates.NAMES}
    assert shapes["slack"] == {"text": text}
    assert shapes["dingtalk"] == shapes["wecom"] == {"msgtype": "text", "text": {"content": text}}
    assert shapes["feishu"] == {"msg_type": "text", "content": {"text": text}}
    assert shapes["json"]["seq"] == 7 and shapes["json"]["task"]["device_id"] == "w\\x0a1"


def test_a_custom_templates_placeholders_are_filled_in_strings_and_cannot_break_its_json():
    custom = templates.check('{"msg": "${event}: ${task_name}", "n": 1, "keep": "$$5", "${rule}": ["${seq}"]}')
    event = dict(templates.task_event("r", "failed", dict(HOSTILE, name='a", "injected": "1'), 0.0), seq=3)
    body = json.loads(templates.render(custom, event))
    assert body == {"msg": 'failed: a", "injected": "1', "n": 1, "keep": "$5", "r": ["3"]}
    with pytest.raises(UsageError, match=r"placeholder \$\{secret\} is unknown"):
        templates.check('{"x": "${secret}"}')
    with pytest.raises(UsageError, match="bad placeholder"):
        templates.check('{"x": "cost $"}')


def test_chat_services_that_answer_200_to_a_refusal_are_failed_attempts():
    assert templates.refused("dingtalk", b'{"errcode": 310000, "errmsg": "keywords not in content"}') \
        == "dingtalk refused it: code 310000 keywords not in content"
    assert templates.refused("wecom", b'{"errcode": 0, "errmsg": "ok"}') is None
    assert templates.refused("feishu", b'{"code": 19021, "msg": "sign match fail"}').startswith("feishu refused")
    assert templates.refused("slack", b"ok") is None


def test_backoff_doubles_with_jitter_and_is_capped():
    s = Settings(retry_s=1.0, retry_max_s=30.0)
    for attempts, base in ((1, 1.0), (2, 2.0), (4, 8.0), (9, 30.0), (500, 30.0)):
        waits = [retry_after(s, attempts) for _ in range(50)]
        assert all(0.75 * base <= w <= 1.25 * base for w in waits), (attempts, min(waits), max(waits))


def test_an_undeliverable_backlog_is_capped_and_old_events_dropped_with_a_count(tmp_path):
    store = TaskStore(tmp_path / "l.db")
    store.stage("INSERT INTO alert_rules (name, events, kind, target, template, delivered, failed, dropped) "
                "VALUES ('r', 'failed', 'webhook', 'http://127.0.0.1:9/', 'json', 0, 0, 0)", ())
    now = time.time()
    for seq in range(1, MAX_BACKLOG + 21):
        alert_store.stage_event(store, seq, "r", "failed", now - 100_000 if seq <= 5 else now, "{}")
    store.commit()
    ledger = DeliveryLedger(tmp_path / "l.db")
    try:
        assert ledger.drop("r", now - 86_400, MAX_BACKLOG) == 20
        assert ledger.head("r")["seq"] == 21   # the five too old, then the oldest beyond the cap
        assert alert_store.rule_stats(store)["r"]["dropped"] == 20
        assert alert_store.rule_stats(store)["r"]["pending"] == MAX_BACKLOG
        ledger.delivered("r", 21, now - 8 * 86_400)
        assert ledger.prune_delivered(now - 7 * 86_400, keep=10) == 1 and ledger.head("r")["seq"] == 22
        for seq in range(22, 42):
            ledger.delivered("r", seq, now - 60 + seq)
        assert ledger.prune_delivered(now - 7 * 86_400, keep=10) == 10   # the newest 10 delivered stay
        assert [r[0] for r in store.db.execute("SELECT seq FROM alert_events WHERE delivered_at IS NOT NULL "
                                               "ORDER BY seq")] == list(range(32, 42))
        assert alert_store.last_seq(store) == MAX_BACKLOG + 20
    finally:
        ledger.close()
        store.close()
