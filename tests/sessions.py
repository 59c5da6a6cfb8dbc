"""A session on the local engine built from parts (stand-in sources, backends and sinks), as the orchestrator
builds it from settings."""

from stream.config import Config
from stream.media.streams import StreamSpec
from stream.outputs.kinds import Outputs
from stream.pipeline.capture import Reconnect
from stream.pipeline.inference import Batching, local_inference
from stream.pipeline.render import Renderer
from stream.session.local import LocalEngine
from stream.session.plan import StreamPlan, plan_run
from stream.session.session import Session


def local_session(backend, preprocessor, categories, batching: Batching, ui=None, keep_running=False,
                  reconnect: Reconnect = Reconnect(), outputs: Outputs | None = None, opener=None,
                  decisions=None, calls: int = 1) -> Session:
    session = Session(batching.size, ui, backend.device_peak_mb, keep_running)
    session.engine = LocalEngine(local_inference(backend, preprocessor, list(categories), batching, calls=calls),
                                 Renderer(False),
                                 batching, session.totals, reconnect, outputs, opener, keep_running,
                                 decisions=decisions)
    return session


def add(session: Session, plan: StreamPlan, source, sinks=(), uri: str | None = None):
    return session.add(StreamSpec(uri or source.info.uri, plan.name), source.info, plan, source, list(sinks))


def run_one(source, backend, preprocessor, categories, sinks, ui=None, **settings):
    """One stream, start to finish, planned as the CLI plans it; the outcome's stats are that stream's."""
    cfg = Config(**{"queue_size": 8, "drop_policy": "block", "batch": 1, "target_fps": 30.0, **settings})
    plan = plan_run(cfg, [StreamSpec(source.info.uri, "stream")], [source.info])
    session = local_session(backend, preprocessor, categories, plan.batching, ui)
    add(session, plan.streams[0], source, sinks)
    outcome = session.run()
    outcome.stats = outcome.streams[0].stats
    return outcome
