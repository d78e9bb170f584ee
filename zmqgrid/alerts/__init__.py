"""Alerts (docs/architecture.md, Alerts): rules on task outcomes and device events, matched in the master's loop
(`book`), delivered beside it to a webhook or a local command (`delivery`, `senders`, `templates`)."""
