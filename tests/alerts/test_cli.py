"""`alerts add|list|test|remove` from the command line, against a real master: bad input is one line, an exit code
and nothing applied; `alerts test` says how the first attempt went; a local command gets the event."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from zmqgrid.client import Client, build_spec

from ..helpers import REPO, Harness, db_query, free_port_block, run_cli, wait_until
from .conftest import FAST_ALERTS

pytestmark = pytest.mark.timeout(120)


def cli(h, *args: str) -> subprocess.CompletedProcess:
    return run_cli("alerts", *args, "--master", h.url, cwd=h.dir)


def test_bad_input_is_one_line_and_an_exit_code_and_adds_nothing(alert_harness, receiver, tmp_path):
    h = alert_harness
    h.start_master()
    good = cli(h, "add", "ok", "--on", "failed", "--webhook", receiver.url("/x"))
    assert good.returncode == 0 and "ok added: failed -> http://127.0.0.1:" in good.stdout, good
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "unknown-field.json").write_text('{"text": "${nope}"}')
    cases = [
        (("add", "t1", "--on", "failed", "--webhook", receiver.url("/x"), "--template", "teams"),
         "template 'teams' is unknown; allowed: json, slack, dingtalk, wecom, feishu"),
        (("add", "t2", "--on", "failed", "--webhook", "ftp://hooks.example/x?token=S3CRET"),
         "--webhook is not an http or https URL"),
        (("add", "t3", "--on", "failed", "--webhook", "not a url"), "--webhook is not an http or https URL"),
        (("add", "t4", "--on", "failed,exploded", "--webhook", receiver.url("/x")), "event 'exploded' is unknown"),
        (("add", "t5", "--on", "failed"), "give one of --webhook URL or --command CMD"),
        (("add", "t6", "--on", "failed", "--webhook", receiver.url("/x"), "--command", "true"),
         "give one of --webhook URL or --command CMD"),
        (("add", "ok", "--on", "offline", "--webhook", receiver.url("/y")), "alert 'ok' exists"),
        (("add", "bad name!", "--on", "failed", "--webhook", receiver.url("/x")), "is not allowed"),
        (("add", "t7", "--on", "failed", "--webhook", receiver.url("/x"), "--template", str(tmp_path / "broken.json")),
         "write it as a JSON document"),
        (("add", "t8", "--on", "failed", "--webhook", receiver.url("/x"),
          "--template", str(tmp_path / "unknown-field.json")), "placeholder ${nope} is unknown"),
        (("remove", "nope"), "no alert rule 'nope'; list them with: python main.py alerts list"),
        (("test", "nope"), "no alert rule 'nope'"),
    ]
    for args, expected in cases:
        proc = cli(h, *args)
        assert proc.returncode == 3, (args, proc)
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), (args, proc.stderr)
        assert expected in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and "S3CRET" not in proc.stderr
    listed = json.loads(cli(h, "list", "--json").stdout)
    assert [(r["name"], r["on"]) for r in listed] == [("ok", "failed")]
    assert db_query(h.db, "SELECT name FROM alert_rules") == [("ok",)]


def test_alerts_test_sends_a_sample_and_says_whether_it_arrived(alert_harness, receiver):
    h = alert_harness
    h.start_master()
    assert cli(h, "add", "good", "--on", "failed", "--webhook", receiver.url("/good"), "--template", "slack"
               ).returncode == 0
    receiver.script["/bad"] = [500]
    assert cli(h, "add", "bad", "--on", "failed", "--webhook", receiver.url("/bad")).returncode == 0

    ok = cli(h, "test", "good")
    assert ok.returncode == 0 and "good: test event" in ok.stdout and "delivered" in ok.stdout, ok
    [body] = receiver.bodies("/good")
    assert body == {"text": body["text"]} and body["text"].startswith("zmqgrid: test alert of rule good")

    failed = cli(h, "test", "bad")
    assert failed.returncode == 1, failed
    assert "not delivered: HTTP 500 from http://127.0.0.1:" in failed.stderr, failed.stderr
    table = cli(h, "list").stdout
    assert "LAST ERROR" in table and "HTTP 500" in table, table

    # DingTalk answers 200 to a message it refuses: that is a failed attempt too
    receiver.answers["/ding"] = b'{"errcode": 310000, "errmsg": "keywords not in content"}'
    assert cli(h, "add", "ding", "--on", "failed", "--webhook", receiver.url("/ding"), "--template", "dingtalk"
               ).returncode == 0
    refused = cli(h, "test", "ding")
    assert refused.returncode == 1, refused
    assert "dingtalk refused it: code 310000 keywords not in content" in refused.stderr, refused.stderr

    # Removing a rule takes its undelivered events with it: nothing more goes out for it
    removed = cli(h, "remove", "bad")
    assert removed.returncode == 0 and removed.stdout.strip() == "bad removed"
    assert db_query(h.db, "SELECT count(*) FROM alert_events WHERE rule = 'bad'") == [(0,)]


def test_a_local_command_gets_the_event_on_stdin_and_in_its_environment(alert_cluster, tmp_path):
    h, client = alert_cluster
    out = tmp_path / "got"
    client.alert_add("local", "failed",
                     command=f'cat > {out}.json; echo "$ZMQGRID_ALERT_EVENT $ZMQGRID_ALERT_TASK_ID" > {out}.env')
    task = client.submit(build_spec(shell="exit 1", retries=0, name="evil\x1b[31m\nname"))[0]
    client.wait([task], 30)
    wait_until(lambda: (tmp_path / "got.env").exists() and (tmp_path / "got.env").read_text(), 20, "the command ran")
    event = json.loads((tmp_path / "got.json").read_text())
    assert event["task"]["id"] == task and event["seq"] >= 1
    assert event["task"]["name"] == "evil\\x1b[31m\\x0aname"   # made printable before it left the master
    assert (tmp_path / "got.env").read_text().split() == ["failed", task]
    wait_until(lambda: client.alerts()[0]["delivered"] == 1, 10, "the delivery recorded")


def test_a_command_that_hangs_is_killed_with_its_children_and_counted_failed(tmp_path):
    h = Harness(tmp_path, env=dict(FAST_ALERTS, ZMQGRID_ALERT_TIMEOUT="1"))
    try:
        h.start_master()
        client = h.client()
        pids = tmp_path / "pids"
        client.alert_add("hangs", "failed", command=f"sleep 300 & echo $! >> {pids}; wait")
        seq = client.alert_test("hangs")["seq"]
        wait_until(lambda: client.alert_event(seq)["attempts"] >= 1, 20, "the first attempt to time out")
        assert "did not finish within 1 s" in client.alert_event(seq)["last_error"]
        first = int(pids.read_text().split()[0])
        wait_until(lambda: not _alive(first), 10, "the command's child killed")
    finally:
        h.stop()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_alerts_work_in_standalone_mode(tmp_path, receiver):
    port = free_port_block()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}
    env.update(FAST_ALERTS, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "zmqgrid", "distribute", "--mode", "standalone", "--port", str(port),
                             "--db", str(tmp_path / "s.db"), "--log-file", str(tmp_path / "s.log")],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"tcp://127.0.0.1:{port}"
        with Client(url, timeout_s=0.5) as probe:
            def online() -> int:
                try:
                    return probe.status()["devices"]["online"]
                except Exception:
                    return 0
            wait_until(online, 30, "a worker online")
        with Client(url, timeout_s=5) as client:   # open, as this standalone cluster is (in the secured suite too)
            client.alert_add("sa", "failed", webhook=receiver.url("/sa"), template="feishu")
            task = client.submit(build_spec(shell="exit 2", retries=0))[0]
            client.wait([task], 30)
        wait_until(lambda: receiver.bodies("/sa"), 20, "the delivery")
        [body] = receiver.bodies("/sa")
        assert body["msg_type"] == "text" and f"task {task}" in body["content"]["text"]
    finally:
        proc.terminate()
        proc.wait(30)
