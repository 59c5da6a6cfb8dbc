"""One run, engine-neutral: prepare (streams, checks, plan, backend options), observe (collectors, snapshots,
UI), conclude (outcome → report → exit status). Engines (local threads here, Ray in stream.cluster) implement
only start, poll, add/remove a stream and stop."""
