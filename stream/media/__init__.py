"""Where frames come from: sources chosen by URI, the run's named streams, the sample clip, decode checks."""
