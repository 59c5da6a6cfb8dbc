"""The frame's path, in the order a frame takes it: capture → mux → preprocess → inference → postprocess →
render. Typed records (frames) between the stages; nothing here knows about engines, the CLI or the lab."""
