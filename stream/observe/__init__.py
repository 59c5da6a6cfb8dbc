"""Observation beside the frame's path: statistics and their snapshots, the real-time verdict, the report,
the dashboard. The dashboard (like stream.web) is a pure function of a snapshot."""
