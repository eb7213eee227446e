"""The experiment layer's shared pieces: flags from configs, run folders, outputs."""
