"""The lab's evaluation as commands: `run_stream.py bench` (speed, load time, memory, numeric change,
real-time verdict) and `run_stream.py eval` (top-1/top-5 accuracy on a labelled image set).

Every (model, backend, precision, batch) runs in its own worker process (`lab.worker`), so its
start-up, load time and peak memory are its own; the parent only schedules, compares and reports.
"""
