"""Alerting: rules on anomalies, predictions, remaining life and edge health raise alerts,
grouped so that one fault is one alert; notifications go to webhooks (plain JSON, Slack),
e-mail (SMTP) and Alertmanager, each delivery recorded with its result and retried.

Modules, one job each: ``config`` (validated rules, channels, silences), ``rules`` (what each
kind of rule finds), ``store`` (the tables of migration 0017), ``evaluator`` (findings ->
alerts -> queued notifications), ``payloads`` (each receiver's shape), ``senders`` (HTTP and
SMTP delivery), ``dispatcher`` (the queue, retries with back-off), ``service`` (the
``rig-cloud alerts`` process), ``cli`` (its command line).
"""
