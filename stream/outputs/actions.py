"""The decisions stage's outputs, from the run's settings: the events and segments files, MQTT, webhooks, clips.

`check` runs before any model loads (every mistake one line); `open_decisions` opens them once the model is
known, and the run closes the hub (stream.decisions.hub.Decisions.close) before its report is written.
"""

from __future__ import annotations

from stream.config import Config, read_toml
from stream.decisions.hub import Decisions
from stream.decisions.rules import RuleSet, parse_rules
from stream.errors import UserError
from stream.outputs.event_log import EventLog, SegmentLog


def load_rules(cfg: Config) -> RuleSet:
    """--rules, or the default smoothing with no rule: every run has steady labels and segments."""
    if cfg.rules is None:
        return RuleSet()
    return parse_rules(read_toml(cfg.rules, "--rules"), f"--rules {cfg.rules}")


def run_files(cfg: Config) -> list[tuple[str, str | None]]:
    """The decision outputs that are files, as (flag, path): checked against the inputs and other outputs."""
    return [("--events", cfg.events), ("--segments", cfg.segments)]


def check(cfg: Config, rules: RuleSet) -> None:
    """Every decision output's setting, before anything opens; one line each."""
    from stream.outputs.sinks import check_writable

    for flag, path in run_files(cfg):
        if path:
            check_writable(path, flag)
    if cfg.clips is not None:
        from stream.outputs.clips import check_folder

        check_folder(cfg.clips)
    elif any(r.clip for r in rules.rules):
        print("note: rules with clip = true save clips only with --clips DIR", flush=True)
    if cfg.mqtt is not None:
        from stream.outputs.mqtt import parse_mqtt_url

        parse_mqtt_url(cfg.mqtt)
    for url in cfg.webhook:
        from stream.outputs.webhook import parse_webhook_url

        parse_webhook_url(url)
    if (cfg.events or cfg.mqtt or cfg.webhook or cfg.clips) and not rules.rules:
        raise UserError("--events, --mqtt, --webhook and --clips send rule events: give --rules FILE with at "
                        "least one [[rule]]")


def open_decisions(cfg: Config, rules: RuleSet) -> Decisions:
    """The hub with its outputs; whatever opened is closed again if a later one fails."""
    outputs, opened = [], []
    try:
        if cfg.events:
            outputs.append(EventLog(cfg.events))
        segments = SegmentLog(cfg.segments) if cfg.segments else None
        if segments is not None:
            opened.append(segments)
        if cfg.mqtt is not None:
            from stream.outputs.mqtt import MqttOutput

            outputs.append(MqttOutput(cfg.mqtt))
        for url in cfg.webhook:
            from stream.outputs.webhook import WebhookOutput

            outputs.append(WebhookOutput(url))
        media = None
        if cfg.clips is not None:
            from stream.outputs.clips import ClipRecorder

            media = ClipRecorder(cfg.clips, rules, cfg.clip_buffer_mb)
            opened.append(media)
    except BaseException:
        for thing in [*outputs, *opened]:
            thing.close()
        raise
    return Decisions(rules, outputs, media, segments)
